"""Server-rendered pages, in the ``registry`` namespace."""

from django.urls import path

from registry import views

urlpatterns = [
    path("", views.browse, name="browse"),
    path("models/<int:model_id>/", views.model_redirect, name="model-redirect"),
    path("models/<int:model_id>/<str:slug>/", views.model_detail, name="model-detail"),
    path(
        "versions/<int:version_id>/publish/",
        views.version_publish_view,
        name="version-publish",
    ),
    path("files/<int:file_id>/convert/", views.file_convert_view, name="file-convert"),
    path("upload/", views.upload, name="upload"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:dataset_id>/<str:slug>/", views.dataset_detail, name="dataset-detail"),
    path("u/<str:username>/", views.creator, name="creator"),
]
