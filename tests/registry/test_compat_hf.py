"""The Hugging Face Hub subset, driven by the real ``huggingface_hub`` client over real HTTP.

The repositories are published once per module on a shared live server (``hf_site``):
alice/tiny-sd-15 (both layouts), alice/secret-tiny (private), alice/counted-tiny.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests
from django.urls import Resolver404, resolve
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get

from registry.access import DownloadDecision
from registry.compat import civitai, hf
from registry.compat.selectors import version_commit
from tests.registry.compat_fixtures import PublishedTiny, SharedSite

pytest_plugins = ["tests.registry.compat_fixtures"]

REPO = "alice/tiny-sd-15"
SECRET = "alice/secret-tiny"
SINGLE = "tiny-sd1.safetensors"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny(site: SharedSite) -> PublishedTiny:
    return site.data["tiny"]


# Downloads ------------------------------------------------------------------------------------


def test_hf_hub_download_returns_the_file_bytes(hf_site, hf_online):
    # given the tiny model published by alice
    # when huggingface_hub downloads one file of the repository
    path = hf_hub_download(REPO, "unet/config.json", endpoint=hf_site.url, cache_dir=hf_online)
    # then it has the bytes of the published file
    expected = _tiny(hf_site).paths.diffusers_dir / "unet" / "config.json"
    assert Path(path).read_bytes() == expected.read_bytes()


def test_snapshot_download_fetches_every_file_of_the_diffusers_folder(hf_site, hf_online):
    # given the tiny model published in both layouts
    # when the whole repository is downloaded at main
    folder = Path(snapshot_download(REPO, endpoint=hf_site.url, cache_dir=hf_online))
    # then main is the diffusers folder, every file with its bytes
    source = _tiny(hf_site).paths.diffusers_dir
    expected = {p.relative_to(source).as_posix(): _sha256(p) for p in source.rglob("*.*")}
    got = {p.relative_to(folder).as_posix(): _sha256(p) for p in folder.rglob("*.*")}
    assert got == expected
    assert folder.name == version_commit(_tiny(hf_site).diffusers)


def test_version_name_revision_serves_that_version(hf_site, hf_online):
    # given the tiny model; its single-file version is named "single-file"
    # when that revision's file is downloaded
    path = hf_hub_download(
        REPO, SINGLE, revision="single-file", endpoint=hf_site.url, cache_dir=hf_online
    )
    # then it is the single file
    assert _sha256(Path(path)) == _sha256(_tiny(hf_site).paths.single_file)


def test_commit_id_revision_resolves_to_its_version(hf_site, hf_online):
    # given the commit id of the single-file version
    commit = version_commit(_tiny(hf_site).single)
    # when the repository is described at that commit
    info = HfApi(endpoint=hf_site.url).model_info(REPO, revision=commit)
    # then it is that version, with its one file
    assert info.sha == commit
    assert [s.rfilename for s in info.siblings] == [SINGLE]


def test_model_info_describes_main_with_sizes_and_sha256(hf_site, hf_online):
    # given the tiny model
    # when the client asks for the model info with file metadata
    info = HfApi(endpoint=hf_site.url).model_info(REPO, files_metadata=True)
    # then main is the diffusers folder, each file with its size and SHA-256
    local = _tiny(hf_site).paths.diffusers_dir / "unet" / "config.json"
    unet = next(s for s in info.siblings if s.rfilename == "unet/config.json")
    assert (unet.size, unet.lfs.sha256) == (local.stat().st_size, _sha256(local))
    assert (info.id, info.sha) == (REPO, version_commit(_tiny(hf_site).diffusers))
    assert (info.library_name, info.private, info.gated) == ("diffusers", False, False)


def test_head_answers_the_headers_huggingface_hub_reads(hf_site, hf_online):
    # given a file of the diffusers version
    local = _tiny(hf_site).paths.diffusers_dir / "vae" / "config.json"
    url = hf_hub_url(REPO, "vae/config.json", endpoint=hf_site.url)
    # when the client reads its metadata (a HEAD request)
    meta = get_hf_file_metadata(url)
    # then the commit, the SHA-256 ETag and the size are there
    assert meta.commit_hash == version_commit(_tiny(hf_site).diffusers)
    assert meta.etag == _sha256(local)
    assert meta.size == local.stat().st_size


def test_range_request_returns_the_tail(hf_site):
    # given the single file
    local = _tiny(hf_site).paths.single_file.read_bytes()
    url = f"{hf_site.url}/{REPO}/resolve/single-file/{SINGLE}"
    # when its bytes from 1000 on are asked for
    response = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=30)
    # then the server answers 206 with exactly the tail
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-{len(local) - 1}/{len(local)}"
    assert response.content == local[1000:]


def test_interrupted_download_resumes_with_huggingface_hubs_http_get(hf_site, hf_online, tmp_path):
    # given the first 100000 bytes of the single file already on disk
    local = _tiny(hf_site).paths.single_file.read_bytes()
    partial = tmp_path / "partial"
    partial.write_bytes(local[:100_000])
    # when huggingface_hub resumes the download from there
    with open(partial, "ab") as fh:
        http_get(
            f"{hf_site.url}/{REPO}/resolve/single-file/{SINGLE}",
            fh,
            resume_size=100_000,
            expected_size=len(local),
        )
    # then the file is whole
    assert partial.read_bytes() == local


def test_resolve_names_the_file_as_civitai_delivery_does(hf_site):
    # (one Content-Disposition shape on every download route: filename* only when needed)
    response = requests.get(f"{hf_site.url}/{REPO}/resolve/main/unet/config.json", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="config.json"'


def test_unsatisfiable_range_is_a_416_with_json(hf_site):
    url = f"{hf_site.url}/{REPO}/resolve/single-file/{SINGLE}"
    response = requests.get(url, headers={"Range": "bytes=99999999-"}, timeout=30)
    assert response.status_code == 416
    assert response.headers["Content-Range"].startswith("bytes */")
    assert response.json()["error"]


def test_a_fetch_of_the_primary_file_counts_one_download(hf_site, hf_online):
    # given a version with one (primary) file, never downloaded
    _, version = hf_site.data["Counted Tiny"]
    # when the client downloads it (a HEAD, then a GET)
    hf_hub_download("alice/counted-tiny", SINGLE, endpoint=hf_site.url, cache_dir=hf_online)
    # then the version counts one download
    version.refresh_from_db()
    assert version.download_count == 1


# Tree -----------------------------------------------------------------------------------------


def test_tree_lists_the_root_folders_and_files(hf_site, hf_online):
    entries = list(HfApi(endpoint=hf_site.url).list_repo_tree(REPO))
    assert sorted((type(e).__name__, e.path) for e in entries) == [
        ("RepoFile", "model_index.json"),
        ("RepoFolder", "scheduler"),
        ("RepoFolder", "text_encoder"),
        ("RepoFolder", "tokenizer"),
        ("RepoFolder", "unet"),
        ("RepoFolder", "vae"),
    ]


def test_tree_of_a_folder_lists_its_files_with_lfs_sha256(hf_site, hf_online):
    # given the unet folder
    # when its tree is listed
    entries = list(HfApi(endpoint=hf_site.url).list_repo_tree(REPO, path_in_repo="unet"))
    # then its two files come with their SHA-256
    weights = _tiny(hf_site).paths.diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors"
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    assert by_path["unet/diffusion_pytorch_model.safetensors"].lfs.sha256 == _sha256(weights)


def test_recursive_tree_lists_every_file(hf_site, hf_online):
    entries = HfApi(endpoint=hf_site.url).list_repo_tree(REPO, recursive=True)
    files = {e.path for e in entries if type(e).__name__ == "RepoFile"}
    source = _tiny(hf_site).paths.diffusers_dir
    assert files == {p.relative_to(source).as_posix() for p in source.rglob("*.*")}


def test_tree_of_a_missing_folder_is_entry_not_found(hf_site, hf_online):
    with pytest.raises(EntryNotFoundError):
        list(HfApi(endpoint=hf_site.url).list_repo_tree(REPO, path_in_repo="nope"))


# Errors and access ----------------------------------------------------------------------------


def test_wrong_revision_raises_revision_not_found(hf_site, hf_online):
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, SINGLE, revision="v9", endpoint=hf_site.url, cache_dir=hf_online)


def test_missing_file_raises_entry_not_found(hf_site, hf_online):
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "unet/nope.bin", endpoint=hf_site.url, cache_dir=hf_online)


def test_unknown_repository_raises_repository_not_found(hf_site, hf_online):
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hf_site.url).model_info("alice/no-such-model")


def test_private_repo_without_token_is_repository_not_found(hf_site, hf_online):
    # given alice's private model
    # when an anonymous client downloads from it
    with pytest.raises(RepositoryNotFoundError) as caught:
        hf_hub_download(SECRET, SINGLE, endpoint=hf_site.url, cache_dir=hf_online)
    # then it is told the repository is not found, with a 401 (as the Hub answers)
    assert caught.value.response.status_code == 401


def test_private_repo_downloads_with_the_owners_token(hf_site, hf_online):
    path = hf_hub_download(
        SECRET, SINGLE, endpoint=hf_site.url, cache_dir=hf_online, token=hf_site.tokens["alice"]
    )
    assert _sha256(Path(path)) == _sha256(_tiny(hf_site).paths.single_file)


def test_private_repo_is_not_found_for_another_user(hf_site, hf_online):
    with pytest.raises(RepositoryNotFoundError) as caught:
        HfApi(endpoint=hf_site.url, token=hf_site.tokens["mallory"]).model_info(SECRET)
    assert caught.value.response.status_code == 404


def test_invalid_token_is_refused_as_bad_credentials(hf_site, hf_online):
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=hf_site.url, token="atl_not-a-token").model_info(REPO)
    assert caught.value.response.status_code == 401
    assert not isinstance(caught.value, RepositoryNotFoundError)


def test_refused_download_is_a_gated_repo_error(hf_site, hf_online, download_policy):
    # given a download policy that asks for a purchase, and a signed-in buyer without one
    download_policy(
        lambda user, target: DownloadDecision(False, 403, "purchase_required", "Buy it first.")
    )
    # when the buyer downloads a file
    with pytest.raises(GatedRepoError) as caught:
        hf_hub_download(
            REPO,
            SINGLE,
            revision="single-file",
            endpoint=hf_site.url,
            cache_dir=hf_online,
            token=hf_site.tokens["mallory"],
        )
    # then the client raises GatedRepoError from a 403
    assert caught.value.response.status_code == 403


def test_control_characters_in_the_path_are_a_404_not_a_crash(hf_site):
    response = requests.get(f"{hf_site.url}/{REPO}/resolve/a%0Ab/model_index.json", timeout=30)
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "RevisionNotFound"
    assert response.json()["code"] == "revision_not_found"


def test_other_methods_are_refused_with_json(hf_site):
    response = requests.post(f"{hf_site.url}/{REPO}/resolve/main/model_index.json", timeout=30)
    assert response.status_code == 405
    assert response.json()["error"]


# Routing --------------------------------------------------------------------------------------


def _view_of(path: str) -> Any:
    try:
        return resolve(path).func
    except Resolver404:
        return None


COMPAT_VIEWS = {
    hf.model_info,
    hf.tree,
    hf.resolve,
    civitai.model_list,
    civitai.model_detail,
    civitai.version_detail,
    civitai.version_by_hash,
}


@pytest.mark.parametrize(
    "path",
    ["/api/v1/models", "/api/v1/models/1", "/api/v1/versions/1", "/alice/tiny-sd-15", "/"],
)
def test_compatible_routes_do_not_shadow_the_sites_own(path):
    assert _view_of(path) not in COMPAT_VIEWS


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("/api/models/alice/tiny-sd-15", hf.model_info),
        ("/api/models/alice/tiny-sd-15/revision/v1.0", hf.model_info),
        ("/api/models/alice/tiny-sd-15/tree/main/unet", hf.tree),
        ("/alice/tiny-sd-15/resolve/main/unet/config.json", hf.resolve),
    ],
)
def test_hub_paths_reach_the_hub_views(path, view):
    assert _view_of(path) is view


# diffusers ------------------------------------------------------------------------------------

PIPELINE_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a lighthouse", num_inference_steps=2, height=64, width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    print("IMAGE", image.size[0], image.size[1])
    """
)


@pytest.mark.slow
def test_diffusers_from_pretrained_loads_through_the_site(hf_site, tmp_path):
    # given HF_ENDPOINT pointing at the site, in a fresh Python process with an empty cache
    env = {
        **os.environ,
        "HF_ENDPOINT": hf_site.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_TOKEN", None)
    script = tmp_path / "load.py"
    script.write_text(PIPELINE_SCRIPT)
    # when StableDiffusionPipeline.from_pretrained("alice/tiny-sd-15") runs and generates
    done = subprocess.run(
        [sys.executable, str(script), REPO], env=env, capture_output=True, text=True, timeout=300
    )
    # then it loaded the model from the site and made a 64x64 image
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IMAGE 64 64" in done.stdout
    assert (tmp_path / "hf-home" / "hub" / "models--alice--tiny-sd-15").is_dir()
