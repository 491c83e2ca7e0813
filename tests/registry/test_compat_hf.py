"""The Hugging Face Hub subset, driven by the real ``huggingface_hub`` client over real HTTP."""

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
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import snapshot_download
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
from registry.services.catalog import model_update
from tests.registry.compat_fixtures import PublishedTiny

pytest_plugins = ["tests.registry.compat_fixtures"]

# Live-server tests run in transactions that are flushed afterwards; serialized_rollback
# restores what data migrations seed (the license catalogue the tiny model's license is in).
live_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)

REPO = "alice/tiny-sd-15"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_private(model: Any) -> None:
    model_update(model=model, user=model.owner, visibility="private")


# Downloads ------------------------------------------------------------------------------------


@live_db
def test_hf_hub_download_returns_the_file_bytes(live_server, published_tiny, hf_online):
    # given the tiny model published by alice
    # when huggingface_hub downloads one file of the repository
    path = hf_hub_download(REPO, "unet/config.json", endpoint=live_server.url, cache_dir=hf_online)
    # then it has the bytes of the published file
    expected = published_tiny.paths.diffusers_dir / "unet" / "config.json"
    assert Path(path).read_bytes() == expected.read_bytes()


@live_db
def test_snapshot_download_fetches_every_file_of_the_diffusers_folder(
    live_server, published_tiny, hf_online
):
    # given the tiny model published in both layouts
    # when the whole repository is downloaded at main
    folder = Path(snapshot_download(REPO, endpoint=live_server.url, cache_dir=hf_online))
    # then main is the diffusers folder, every file with its bytes
    source = published_tiny.paths.diffusers_dir
    expected = {p.relative_to(source).as_posix(): _sha256(p) for p in source.rglob("*.*")}
    got = {p.relative_to(folder).as_posix(): _sha256(p) for p in folder.rglob("*.*")}
    assert got == expected
    assert folder.name == version_commit(published_tiny.diffusers)


@live_db
def test_version_name_revision_serves_the_single_file(live_server, published_tiny, hf_online):
    # given the tiny model in both layouts; the single-file version is named "single-file"
    # when that revision's file is downloaded
    path = hf_hub_download(
        REPO,
        "tiny-sd1.safetensors",
        revision="single-file",
        endpoint=live_server.url,
        cache_dir=hf_online,
    )
    # then it is the single file
    assert _sha256(Path(path)) == _sha256(published_tiny.paths.single_file)


@live_db
def test_commit_id_revision_resolves_to_its_version(
    live_server, published_single_tiny, hf_online
):
    # given the commit id of a single-file version
    commit = version_commit(published_single_tiny[1])
    # when the repository is described at that commit
    info = HfApi(endpoint=live_server.url).model_info(REPO, revision=commit)
    # then it is that version, with its one file
    assert info.sha == commit
    assert [s.rfilename for s in info.siblings] == ["tiny-sd1.safetensors"]


@live_db
def test_model_info_describes_siblings_with_sizes_and_sha256(
    live_server, published_tiny, hf_online
):
    # given the tiny model
    # when the client asks for the model info with file metadata
    info = HfApi(endpoint=live_server.url).model_info(REPO, files_metadata=True)
    # then every file of main is listed with its size and SHA-256, and main is diffusers
    unet = next(s for s in info.siblings if s.rfilename == "unet/config.json")
    local = published_tiny.paths.diffusers_dir / "unet" / "config.json"
    assert (unet.size, unet.lfs.sha256) == (local.stat().st_size, _sha256(local))
    assert info.id == REPO
    assert info.sha == version_commit(published_tiny.diffusers)
    assert info.library_name == "diffusers"
    assert info.private is False


@live_db
def test_head_answers_the_headers_huggingface_hub_reads(live_server, published_tiny, hf_online):
    # given a file of the diffusers version
    local = published_tiny.paths.diffusers_dir / "vae" / "config.json"
    url = hf_hub_url(REPO, "vae/config.json", endpoint=live_server.url)
    # when the client reads its metadata (a HEAD request)
    meta = get_hf_file_metadata(url)
    # then the commit, the SHA-256 ETag and the size are there
    assert meta.commit_hash == version_commit(published_tiny.diffusers)
    assert meta.etag == _sha256(local)
    assert meta.size == local.stat().st_size


@live_db
def test_range_request_returns_the_tail(live_server, published_single_tiny, tiny_paths):
    # given the single file
    local = tiny_paths.single_file.read_bytes()
    url = f"{live_server.url}/{REPO}/resolve/v1.0/tiny-sd1.safetensors"
    # when its bytes from 1000 on are asked for
    response = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=30)
    # then the server answers 206 with exactly the tail
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-{len(local) - 1}/{len(local)}"
    assert response.content == local[1000:]


@live_db
def test_interrupted_download_resumes_with_huggingface_hubs_http_get(
    live_server, published_single_tiny, tiny_paths, hf_online, tmp_path
):
    # given the first 100000 bytes of the single file already on disk
    local = tiny_paths.single_file.read_bytes()
    url = f"{live_server.url}/{REPO}/resolve/main/tiny-sd1.safetensors"
    partial = tmp_path / "partial"
    partial.write_bytes(local[:100_000])
    # when huggingface_hub resumes the download from there
    with open(partial, "ab") as fh:
        http_get(url, fh, resume_size=100_000, expected_size=len(local))
    # then the file is whole
    assert partial.read_bytes() == local


@live_db
def test_unsatisfiable_range_is_a_416_with_json(live_server, published_single_tiny):
    url = f"{live_server.url}/{REPO}/resolve/main/tiny-sd1.safetensors"
    response = requests.get(url, headers={"Range": "bytes=99999999-"}, timeout=30)
    assert response.status_code == 416
    assert response.headers["Content-Range"].startswith("bytes */")
    assert "error" in response.json()


@live_db
def test_a_fetch_of_the_primary_file_counts_one_download(
    live_server, published_single_tiny, hf_online
):
    # given a version with one (primary) file
    _, version = published_single_tiny
    # when the client downloads it (a HEAD, then a GET)
    hf_hub_download(REPO, "tiny-sd1.safetensors", endpoint=live_server.url, cache_dir=hf_online)
    # then the version counts one download
    version.refresh_from_db()
    assert version.download_count == 1


# Tree -----------------------------------------------------------------------------------------


@live_db
def test_tree_lists_the_root_folders_and_files(live_server, published_tiny, hf_online):
    entries = list(HfApi(endpoint=live_server.url).list_repo_tree(REPO))
    assert sorted((type(e).__name__, e.path) for e in entries) == [
        ("RepoFile", "model_index.json"),
        ("RepoFolder", "scheduler"),
        ("RepoFolder", "text_encoder"),
        ("RepoFolder", "tokenizer"),
        ("RepoFolder", "unet"),
        ("RepoFolder", "vae"),
    ]


@live_db
def test_tree_of_a_folder_lists_its_files_with_lfs_sha256(live_server, published_tiny, hf_online):
    # given the unet folder
    # when its tree is listed
    entries = list(HfApi(endpoint=live_server.url).list_repo_tree(REPO, path_in_repo="unet"))
    # then its two files come with their SHA-256
    weights = published_tiny.paths.diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors"
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    assert by_path["unet/diffusion_pytorch_model.safetensors"].lfs.sha256 == _sha256(weights)


@live_db
def test_recursive_tree_lists_every_file(live_server, published_tiny, hf_online):
    entries = HfApi(endpoint=live_server.url).list_repo_tree(REPO, recursive=True)
    files = {e.path for e in entries if type(e).__name__ == "RepoFile"}
    assert len(files) == 10
    assert "tokenizer/tokenizer.json" in files


@live_db
def test_tree_of_a_missing_folder_is_entry_not_found(
    live_server, published_single_tiny, hf_online
):
    with pytest.raises(EntryNotFoundError):
        list(HfApi(endpoint=live_server.url).list_repo_tree(REPO, path_in_repo="nope"))


# Errors and access ----------------------------------------------------------------------------


@live_db
def test_wrong_revision_raises_revision_not_found(live_server, published_single_tiny, hf_online):
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO, "tiny-sd1.safetensors", revision="v9", endpoint=live_server.url,
            cache_dir=hf_online,
        )


@live_db
def test_missing_file_raises_entry_not_found(live_server, published_single_tiny, hf_online):
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "unet/nope.bin", endpoint=live_server.url, cache_dir=hf_online)


@live_db
def test_unknown_repository_raises_repository_not_found(live_server, hf_online):
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=live_server.url).model_info("alice/no-such-model")


@live_db
def test_private_repo_without_token_is_repository_not_found(
    live_server, published_single_tiny, hf_online
):
    # given alice's model made private
    _make_private(published_single_tiny[0])
    # when an anonymous client downloads from it
    with pytest.raises(RepositoryNotFoundError) as caught:
        hf_hub_download(
            REPO, "tiny-sd1.safetensors", endpoint=live_server.url, cache_dir=hf_online
        )
    # then it is told the repository is not found, with a 401
    assert caught.value.response.status_code == 401


@live_db
def test_private_repo_downloads_with_the_owners_token(
    live_server, published_single_tiny, tiny_paths, hf_online, token_for
):
    # given alice's private model and alice's token
    model, _ = published_single_tiny
    _make_private(model)
    token = token_for(model.owner)
    # when the client downloads with the token
    path = hf_hub_download(
        REPO, "tiny-sd1.safetensors", endpoint=live_server.url, cache_dir=hf_online, token=token
    )
    # then the file comes
    assert _sha256(Path(path)) == _sha256(tiny_paths.single_file)


@live_db
def test_private_repo_is_not_found_for_another_user(
    live_server, published_single_tiny, hf_online, make_user, token_for
):
    _make_private(published_single_tiny[0])
    token = token_for(make_user("mallory"))
    with pytest.raises(RepositoryNotFoundError) as caught:
        HfApi(endpoint=live_server.url, token=token).model_info(REPO)
    assert caught.value.response.status_code == 404


@live_db
def test_invalid_token_is_refused_as_bad_credentials(live_server, hf_online):
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=live_server.url, token="atl_not-a-token").model_info(REPO)
    assert caught.value.response.status_code == 401
    assert not isinstance(caught.value, RepositoryNotFoundError)


@live_db
def test_refused_download_is_a_gated_repo_error(
    live_server, published_single_tiny, hf_online, download_policy, make_user, token_for
):
    # given a download policy that asks for a purchase, and a signed-in buyer without one
    download_policy(
        lambda user, target: DownloadDecision(False, 403, "purchase_required", "Buy it first.")
    )
    token = token_for(make_user("bob"))
    # when the buyer downloads a file
    with pytest.raises(GatedRepoError) as caught:
        hf_hub_download(
            REPO, "tiny-sd1.safetensors", endpoint=live_server.url, cache_dir=hf_online,
            token=token,
        )
    # then the client raises GatedRepoError from a 403
    assert caught.value.response.status_code == 403


@live_db
def test_other_methods_are_refused_with_json(live_server):
    response = requests.post(f"{live_server.url}/{REPO}/resolve/main/model_index.json", timeout=30)
    assert response.status_code == 405
    assert "error" in response.json()


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
@live_db
def test_diffusers_from_pretrained_loads_through_the_site(live_server, published_tiny, tmp_path):
    # given HF_ENDPOINT pointing at the site in a fresh Python process with an empty cache
    env = {
        **os.environ,
        "HF_ENDPOINT": live_server.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_TOKEN", None)
    script = tmp_path / "load.py"
    script.write_text(PIPELINE_SCRIPT)
    # when StableDiffusionPipeline.from_pretrained("alice/tiny-sd-15") runs and generates
    done = subprocess.run(
        [sys.executable, str(script), REPO],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # then it loaded the model from the site and made a 64x64 image
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IMAGE 64 64" in done.stdout
    assert (tmp_path / "hf-home" / "hub" / "models--alice--tiny-sd-15").is_dir()
