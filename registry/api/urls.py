"""The registry's REST API routes, under ``/api/v1/`` (``registry/urls.py``; the
``registry`` namespace)."""

from django.urls import path

from registry.api import conversions, datasets, images, models, uploads, users

urlpatterns = [
    path("uploads", uploads.UploadCreateApi.as_view(), name="upload-create"),
    path(
        "uploads/<uuid:upload_id>",
        uploads.UploadDetailApi.as_view(),
        name="upload-detail",
    ),
    path(
        "uploads/<uuid:upload_id>/complete",
        uploads.UploadCompleteApi.as_view(),
        name="upload-complete",
    ),
    path("models", models.ModelListCreateApi.as_view(), name="api-model-list"),
    path("models/<int:model_id>", models.ModelDetailApi.as_view(), name="api-model-detail"),
    path(
        "models/<int:model_id>/versions",
        models.ModelVersionListCreateApi.as_view(),
        name="api-model-versions",
    ),
    path(
        "versions/<int:version_id>",
        models.VersionDetailApi.as_view(),
        name="api-version-detail",
    ),
    path(
        "versions/<int:version_id>/publish",
        models.VersionPublishApi.as_view(),
        name="api-version-publish",
    ),
    path(
        "versions/<int:version_id>/unpublish",
        models.VersionUnpublishApi.as_view(),
        name="api-version-unpublish",
    ),
    path(
        "versions/<int:version_id>/images",
        models.VersionImageCreateApi.as_view(),
        name="api-version-images",
    ),
    path(
        "versions/<int:version_id>/images/order",
        images.VersionImageOrderApi.as_view(),
        name="api-version-images-order",
    ),
    path("images/<int:image_id>", images.SampleImageDeleteApi.as_view(), name="api-image"),
    path(
        "files/by-hash/<str:hash_value>",
        models.FileByHashApi.as_view(),
        name="api-file-by-hash",
    ),
    path(
        "files/<int:file_id>/download",
        models.FileDownloadApi.as_view(),
        name="api-file-download",
    ),
    path(
        "files/<int:file_id>/conversion",
        conversions.FileConversionApi.as_view(),
        name="api-file-conversion",
    ),
    path("datasets", datasets.DatasetListCreateApi.as_view(), name="api-dataset-list"),
    path(
        "datasets/<int:dataset_id>",
        datasets.DatasetDetailApi.as_view(),
        name="api-dataset-detail",
    ),
    path(
        "datasets/<int:dataset_id>/versions",
        datasets.DatasetVersionCreateApi.as_view(),
        name="api-dataset-versions",
    ),
    path(
        "dataset-versions/<int:dataset_version_id>",
        datasets.DatasetVersionDetailApi.as_view(),
        name="api-dataset-version-detail",
    ),
    path("users/<str:username>", users.UserProfileApi.as_view(), name="api-user-detail"),
]
