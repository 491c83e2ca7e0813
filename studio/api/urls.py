"""The studio's REST API routes, under ``/api/v1/`` (``studio/urls.py``; the ``studio``
namespace). The PNG route is a plain view (``studio.views.generation_image``): it serves the
image to a session or an API token."""

from django.urls import path

from studio import views
from studio.api import generations

urlpatterns = [
    path("generations", generations.GenerationListCreateApi.as_view(), name="api-generation-list"),
    path(
        "generations/<int:generation_id>",
        generations.GenerationDetailApi.as_view(),
        name="api-generation-detail",
    ),
    path(
        "generations/<int:generation_id>/image",
        views.generation_image,
        name="generation-image",
    ),
    path(
        "generations/<int:generation_id>/cancel",
        generations.GenerationCancelApi.as_view(),
        name="api-generation-cancel",
    ),
    path(
        "generations/<int:generation_id>/samples",
        generations.GenerationSampleCreateApi.as_view(),
        name="api-generation-samples",
    ),
]
