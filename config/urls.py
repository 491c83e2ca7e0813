"""Top-level routes: the admin, the OpenAPI schema and docs, and each app's ``urls.py`` (its
pages and its REST API under ``/api/v1/``). Compatible routes (Hugging Face, Civitai) sit at the
paths tools expect (``registry/compat/urls.py``)."""

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.views import home, landing

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("welcome/", landing, name="landing"),  # the landing page for visitors (config.views)
    # "/": the landing page for visitors, browse for signed-in users (config.views.home);
    # browse itself is at /models/ (registry:browse).
    path("", home, name="home"),
    # Each app's urls.py, once: its pages, and its REST API (its api/urls.py) under /api/v1/.
    path("", include("core.urls")),
    path("", include("studio.urls")),
    path("", include("marketplace.urls")),
    path("", include("federated.urls")),
    path("", include("registry.urls")),
]

# Sample images and previews in the demo (DEBUG); production serves media from storage.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

# Unmatched and crashing API requests answer in the JSON error shape too (core.errors).
handler404 = "core.errors.handler404"
handler500 = "core.errors.handler500"
