"""Studio routes, included once by ``config/urls.py`` (namespace ``studio``): the REST API
(``api/urls.py``) under ``/api/v1/generations``, and the pages under ``/studio/``."""

from django.urls import include, path

from studio import views

app_name = "studio"

urlpatterns = [
    path("api/v1/", include("studio.api.urls")),
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
        "studio/generations/<int:generation_id>/cancel/",
        views.generation_cancel_view,
        name="generation-cancel",
    ),
    path(
        "studio/generations/<int:generation_id>/sample/",
        views.generation_sample,
        name="generation-sample",
    ),
]
