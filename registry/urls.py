"""Registry routes: REST API, downloads, compatible endpoints and pages."""

from django.urls import include, path

from registry import views_downloads
from registry.api import uploads

app_name = "registry"

urlpatterns = [
    path("api/v1/uploads", uploads.UploadCreateApi.as_view(), name="upload-create"),
    path(
        "api/v1/uploads/<uuid:upload_id>",
        uploads.UploadDetailApi.as_view(),
        name="upload-detail",
    ),
    path(
        "api/v1/uploads/<uuid:upload_id>/complete",
        uploads.UploadCompleteApi.as_view(),
        name="upload-complete",
    ),
    path(
        "api/download/models/<int:version_id>",
        views_downloads.model_version_download,
        name="download-model-version",
    ),
    path(
        "api/download/datasets/<int:version_id>",
        views_downloads.dataset_version_download,
        name="download-dataset-version",
    ),
    path("files/<str:sha256>/<str:filename>", views_downloads.signed_file, name="signed-file"),
    path("", include("registry.api_urls")),
    path("", include("registry.compat.urls")),
    path("", include("registry.web_urls")),
]
