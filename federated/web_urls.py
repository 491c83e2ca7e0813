"""Server-rendered federated pages (trainers' jobs and the data owners' dashboard), included
at the site root by ``config/urls.py``."""

from django.urls import path

from federated import views

app_name = "training"

urlpatterns = [
    path("train/", views.job_list, name="job-list"),
    path("train/new/", views.job_new, name="job-new"),
    path("train/jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("train/jobs/<int:job_id>/live/", views.job_live, name="job-live"),
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
