"""Routes at the paths other tools expect: the Hugging Face Hub subset and Civitai's API v1.

Order matters only against the site's own routes: each pattern here has a fixed segment the
site's pages do not use (``/api/models/``, ``/{owner}/{slug}/resolve/``, ``/civitai/``,
``/api/v1/model-versions/``). See :mod:`registry.compat.hf` and :mod:`registry.compat.civitai`.
"""

from django.urls import URLPattern, path, re_path

from registry.compat import civitai, hf
from registry.views import downloads as views_downloads

SEGMENT = r"[^/]+"
REPO = rf"(?P<owner>{SEGMENT})/(?P<slug>{SEGMENT})"

urlpatterns: list[URLPattern] = [
    # Hugging Face Hub
    re_path(rf"^api/models/{REPO}$", hf.model_info, name="hf-model-info"),
    re_path(
        rf"^api/models/{REPO}/revision/(?P<revision>.+)$",
        hf.model_info,
        name="hf-model-info-revision",
    ),
    re_path(
        rf"^api/models/{REPO}/tree/(?P<revision>{SEGMENT})(?:/(?P<path>.*))?$",
        hf.tree,
        name="hf-tree",
    ),
    re_path(
        rf"^{REPO}/resolve/(?P<revision>{SEGMENT})/(?P<path>.+)$", hf.resolve, name="hf-resolve"
    ),
    # Civitai API v1 (base URL <site>/civitai)
    path("civitai/api/v1/models", civitai.model_list, name="civitai-models"),
    path("civitai/api/v1/models/<str:model_id>", civitai.model_detail, name="civitai-model"),
    path("civitai/api/v1/enums", civitai.enums, name="civitai-enums"),
    path(
        "civitai/api/v1/model-versions/by-hash",
        civitai.versions_by_hashes,
        name="civitai-versions-by-hashes",
    ),
    path(
        "civitai/api/v1/model-versions/by-hash/<str:hash_value>",
        civitai.version_by_hash,
        name="civitai-version-by-hash",
    ),
    path(
        "civitai/api/v1/model-versions/mini/<str:version_id>",
        civitai.version_mini,
        name="civitai-version-mini",
    ),
    path(
        "civitai/api/v1/model-versions/<str:version_id>",
        civitai.version_detail,
        name="civitai-version",
    ),
    path(
        "civitai/api/download/models/<int:version_id>",
        views_downloads.model_version_download,
        name="civitai-download-model-version",
    ),
    # A diffusers version's zip, behind a signed link (registry.services.archives).
    path(
        "files/archive/<int:version_id>/<str:filename>",
        views_downloads.archive_file,
        name="civitai-archive-file",
    ),
    # The same model-version routes and the enums at Civitai's own paths (unused by Atelier's
    # API).
    path("api/v1/enums", civitai.enums, name="civitai-root-enums"),
    path(
        "api/v1/model-versions/by-hash",
        civitai.versions_by_hashes,
        name="civitai-root-versions-by-hashes",
    ),
    path(
        "api/v1/model-versions/by-hash/<str:hash_value>",
        civitai.version_by_hash,
        name="civitai-root-version-by-hash",
    ),
    path(
        "api/v1/model-versions/mini/<str:version_id>",
        civitai.version_mini,
        name="civitai-root-version-mini",
    ),
    path(
        "api/v1/model-versions/<str:version_id>",
        civitai.version_detail,
        name="civitai-root-version",
    ),
    # Anything else under Civitai's prefixes is a JSON 404, never the site's HTML page.
    re_path(r"^civitai/", civitai.unknown_route, name="civitai-unknown"),
    re_path(r"^api/v1/model-versions/", civitai.unknown_route, name="civitai-root-unknown"),
]
