"""Federated routes, included once by ``config/urls.py``: the REST API (``api/urls.py``,
namespace ``federated``) under ``/api/v1/federated/``, where the old ``/api/federated/...``
paths answer 308 (method and body kept); the trainers' and data owners' pages (namespace
``training``: their names, ``job-detail`` and others, are the API's too)."""

from django.urls import include, path

from core.redirects import moved_permanently
from federated import views

pages = [
    path("train/", views.job_list, name="job-list"),
    path("train/new/", views.job_new, name="job-new"),
    path("train/jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("train/jobs/<int:job_id>/live/", views.job_live, name="job-live"),
    path("train/jobs/<int:job_id>/public/", views.job_public, name="job-public"),
    path("train/jobs/<int:job_id>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("nodes/", views.node_dashboard, name="dashboard"),
    path(
        "nodes/approvals/<int:job_dataset_id>/approve/",
        views.approval_approve,
        name="approval-approve",
    ),
    path(
        "nodes/approvals/<int:job_dataset_id>/reject/",
        views.approval_reject,
        name="approval-reject",
    ),
    path("nodes/datasets/<int:dataset_version_id>/", views.dataset_detail, name="dataset-detail"),
    path(
        "nodes/datasets/<int:dataset_version_id>/terms/",
        views.dataset_terms_edit,
        name="dataset-terms-edit",
    ),
    path(
        "nodes/datasets/<int:dataset_version_id>/previews/",
        views.dataset_preview_add_view,
        name="dataset-preview-add",
    ),
    path(
        "nodes/datasets/<int:dataset_version_id>/previews/<int:preview_id>/remove/",
        views.dataset_preview_remove_view,
        name="dataset-preview-remove",
    ),
]

urlpatterns = [
    path("api/v1/federated/", include("federated.api.urls")),
    path("api/federated/<path:rest>", moved_permanently("/api/v1/federated/")),
    path("", include((pages, "training"))),
]
