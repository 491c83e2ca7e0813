"""The federated REST API's routes, under ``/api/v1/federated/`` (``federated/urls.py``)."""

from django.urls import path

from federated.api import approvals, datasets, earnings, job_run, jobs, nodes

app_name = "federated"

urlpatterns = [
    path("nodes", nodes.NodeListCreateApi.as_view(), name="node-list"),
    path("nodes/heartbeat", nodes.NodeHeartbeatApi.as_view(), name="node-heartbeat"),
    path("nodes/<int:node_id>/revoke", nodes.NodeRevokeApi.as_view(), name="node-revoke"),
    path("datasets", datasets.FederatedDatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/mine", datasets.FederatedDatasetMineApi.as_view(), name="dataset-mine"),
    path(
        "datasets/<int:dataset_version_id>",
        datasets.FederatedDatasetDetailApi.as_view(),
        name="dataset-detail",
    ),
    path(
        "datasets/<int:dataset_version_id>/terms",
        datasets.DatasetTermsUpdateApi.as_view(),
        name="dataset-terms",
    ),
    path(
        "datasets/<int:dataset_version_id>/budget",
        datasets.DatasetBudgetApi.as_view(),
        name="dataset-budget",
    ),
    path(
        "datasets/<int:dataset_version_id>/earnings",
        earnings.DatasetEarningsApi.as_view(),
        name="dataset-earnings",
    ),
    path("earnings", earnings.EarningsListApi.as_view(), name="earnings"),
    path("jobs", jobs.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/estimate", jobs.JobEstimateApi.as_view(), name="job-estimate"),
    path("jobs/<int:job_id>", jobs.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel", jobs.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/progress", job_run.JobProgressApi.as_view(), name="job-progress"),
    path("jobs/<int:job_id>/base-model", job_run.JobBaseModelApi.as_view(), name="job-base-model"),
    path("approvals", approvals.ApprovalListApi.as_view(), name="approval-list"),
    path(
        "approvals/<int:job_dataset_id>/approve",
        approvals.ApprovalApproveApi.as_view(),
        name="approval-approve",
    ),
    path(
        "approvals/<int:job_dataset_id>/reject",
        approvals.ApprovalRejectApi.as_view(),
        name="approval-reject",
    ),
]
