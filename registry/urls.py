"""Registry routes, included once by ``config/urls.py`` (namespace ``registry``): the REST API
(``api/urls.py``) under ``/api/v1/``, downloads and signed file links, the compatible routes
(``compat/urls.py``: Hugging Face, Civitai) and the pages."""

from django.urls import include, path

from registry.views import catalog as views
from registry.views import downloads as views_downloads
from registry.views import images as views_images

app_name = "registry"

urlpatterns = [
    path("api/v1/", include("registry.api.urls")),
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
    path("", include("registry.compat.urls")),
    # pages
    path("models/", views.browse, name="browse"),  # "/" is config.views.home
    path("models/<int:model_id>/", views.model_redirect, name="model-redirect"),
    path("models/<int:model_id>/<str:slug>/", views.model_detail, name="model-detail"),
    path(
        "versions/<int:version_id>/publish/",
        views.version_publish_view,
        name="version-publish",
    ),
    path(
        "versions/<int:version_id>/images/",
        views_images.version_images_add,
        name="version-images-add",
    ),
    path(
        "images/<int:image_id>/remove/",
        views_images.sample_image_remove_view,
        name="sample-image-remove",
    ),
    path(
        "images/<int:image_id>/move/", views_images.sample_image_move_view, name="sample-image-move"
    ),
    path("files/<int:file_id>/convert/", views.file_convert_view, name="file-convert"),
    path("upload/", views.upload, name="upload"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:dataset_id>/<str:slug>/", views.dataset_detail, name="dataset-detail"),
    path("u/<str:username>/", views.creator, name="creator"),
]
