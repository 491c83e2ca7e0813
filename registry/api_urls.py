"""The registry's REST API under ``/api/v1/`` (uploads are routed in ``registry/urls.py``)."""

from django.urls import path

from registry.api import conversions, datasets, images, models, users

urlpatterns = [
    path("api/v1/models", models.ModelListCreateApi.as_view(), name="api-model-list"),
    path("api/v1/models/<int:model_id>", models.ModelDetailApi.as_view(), name="api-model-detail"),
    path(
        "api/v1/models/<int:model_id>/versions",
        models.ModelVersionListCreateApi.as_view(),
        name="api-model-versions",
    ),
    path(
        "api/v1/versions/<int:version_id>",
        models.VersionDetailApi.as_view(),
        name="api-version-detail",
    ),
    path(
        "api/v1/versions/<int:version_id>/publish",
        models.VersionPublishApi.as_view(),
        name="api-version-publish",
    ),
    path(
        "api/v1/versions/<int:version_id>/unpublish",
        models.VersionUnpublishApi.as_view(),
        name="api-version-unpublish",
    ),
    path(
        "api/v1/versions/<int:version_id>/images",
        models.VersionImageCreateApi.as_view(),
        name="api-version-images",
    ),
    path(
        "api/v1/versions/<int:version_id>/images/order",
        images.VersionImageOrderApi.as_view(),
        name="api-version-images-order",
    ),
    path("api/v1/images/<int:image_id>", images.SampleImageDeleteApi.as_view(), name="api-image"),
    path(
        "api/v1/files/by-hash/<str:hash_value>",
        models.FileByHashApi.as_view(),
        name="api-file-by-hash",
    ),
    path(
        "api/v1/files/<int:file_id>/download",
        models.FileDownloadApi.as_view(),
        name="api-file-download",
    ),
    path(
        "api/v1/files/<int:file_id>/conversion",
        conversions.FileConversionApi.as_view(),
        name="api-file-conversion",
    ),
    path("api/v1/datasets", datasets.DatasetListCreateApi.as_view(), name="api-dataset-list"),
    path(
        "api/v1/datasets/<int:dataset_id>",
        datasets.DatasetDetailApi.as_view(),
        name="api-dataset-detail",
    ),
    path(
        "api/v1/datasets/<int:dataset_id>/versions",
        datasets.DatasetVersionCreateApi.as_view(),
        name="api-dataset-versions",
    ),
    path(
        "api/v1/dataset-versions/<int:dataset_version_id>",
        datasets.DatasetVersionDetailApi.as_view(),
        name="api-dataset-version-detail",
    ),
    path("api/v1/users/<str:username>", users.UserProfileApi.as_view(), name="api-user-detail"),
]
