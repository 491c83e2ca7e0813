"""Federated routes (REST API), included under ``/api/federated/`` by ``config/urls.py``."""

from django.urls import path

from federated import api

app_name = "federated"

urlpatterns = [
    path("nodes", api.NodeListCreateApi.as_view(), name="node-list"),
    path("nodes/heartbeat", api.NodeHeartbeatApi.as_view(), name="node-heartbeat"),
    path("nodes/<int:node_id>/revoke", api.NodeRevokeApi.as_view(), name="node-revoke"),
    path("datasets", api.FederatedDatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/mine", api.FederatedDatasetMineApi.as_view(), name="dataset-mine"),
    path(
        "datasets/<int:dataset_version_id>",
        api.FederatedDatasetDetailApi.as_view(),
        name="dataset-detail",
    ),
    path(
        "datasets/<int:dataset_version_id>/terms",
        api.DatasetTermsUpdateApi.as_view(),
        name="dataset-terms",
    ),
    path(
        "datasets/<int:dataset_version_id>/budget",
        api.DatasetBudgetApi.as_view(),
        name="dataset-budget",
    ),
    path(
        "datasets/<int:dataset_version_id>/earnings",
        api.DatasetEarningsApi.as_view(),
        name="dataset-earnings",
    ),
    path("earnings", api.EarningsListApi.as_view(), name="earnings"),
    path("jobs", api.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/estimate", api.JobEstimateApi.as_view(), name="job-estimate"),
    path("jobs/<int:job_id>", api.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/progress", api.JobProgressApi.as_view(), name="job-progress"),
    path("jobs/<int:job_id>/base-model", api.JobBaseModelApi.as_view(), name="job-base-model"),
    path("approvals", api.ApprovalListApi.as_view(), name="approval-list"),
    path(
        "approvals/<int:job_dataset_id>/approve",
        api.ApprovalApproveApi.as_view(),
        name="approval-approve",
    ),
    path(
        "approvals/<int:job_dataset_id>/reject",
        api.ApprovalRejectApi.as_view(),
        name="approval-reject",
    ),
]
