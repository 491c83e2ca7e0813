"""Studio routes: the pages under ``/studio/`` and the REST API under ``/api/v1/generations``."""

from django.urls import path

from studio import api, views

app_name = "studio"

urlpatterns = [
    path("studio/", views.generate, name="generate"),
    path("studio/gallery/", views.gallery, name="gallery"),
    path(
        "studio/generations/<int:generation_id>/",
        views.generation_detail,
        name="generation-detail",
    ),
    path(
        "studio/generations/<int:generation_id>/visibility/",
        views.generation_visibility,
        name="generation-visibility",
    ),
    path(
        "studio/generations/<int:generation_id>/sample/",
        views.generation_sample,
        name="generation-sample",
    ),
    path("api/v1/generations", api.GenerationListCreateApi.as_view(), name="api-generation-list"),
    path(
        "api/v1/generations/<int:generation_id>",
        api.GenerationDetailApi.as_view(),
        name="api-generation-detail",
    ),
    path(
        "api/v1/generations/<int:generation_id>/image",
        views.generation_image,
        name="generation-image",
    ),
    path(
        "api/v1/generations/<int:generation_id>/samples",
        api.GenerationSampleCreateApi.as_view(),
        name="api-generation-samples",
    ),
]
