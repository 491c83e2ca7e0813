"""Bearer authentication of nodes (``atn_...``, also for the base model of a job they serve)
and of a job's ServerApp (``atj_...`` job token for the base model, ``atp_...`` progress token
for its reports; both only in its credentials file on the SuperLink host, never in the run
config that nodes read)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.auth import ApiTokenAuthentication, bearer_secret
from core.errors import AccessDeniedError, ApplicationError, NotFoundError
from federated.models import FederatedJob, Node
from federated.selectors import node_serves_job
from federated.services.jobs import job_token_check
from federated.services.nodes import node_authenticate
from federated.services.tokens import JOB_TOKEN_PREFIX, NODE_TOKEN_PREFIX, PROGRESS_TOKEN_PREFIX


def _header_secret(request: Request) -> str:
    """The bearer secret of the Authorization header only (never a query parameter)."""
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else ""


class NodeTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer atn_...``: the request's user is the node's owner and
    ``request.auth`` the :class:`~federated.models.Node`."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, Node] | None:
        secret = _header_secret(request)
        if not secret:
            return None
        node = node_authenticate(token=secret)
        if node is None or not node.owner.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked node token.")
        return (node.owner, node)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class UserAuthentication(ApiTokenAuthentication):
    """The site's API tokens, leaving job and progress tokens to the view that checks them."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        secret = bearer_secret(request._request)
        if secret and secret.startswith((JOB_TOKEN_PREFIX, PROGRESS_TOKEN_PREFIX)):
            return None
        return super().authenticate(request)


def job_for_token(request: Request, job_id: int, *, kind: str) -> FederatedJob:
    """The job whose current ``kind`` token ("job" or "progress") the request bears.

    401 without it or with another secret (another job's included), 403 when the job is
    finished (its run has no business downloading or reporting any more: progress answers
    409 itself, so it asks with ``kind="progress"`` and gets the job).
    """
    secret = _header_secret(request)
    job = FederatedJob.objects.select_related("base_version__model").filter(pk=job_id).first()
    if not secret or job is None or not job_token_check(job=job, secret=secret, kind=kind):
        raise ApplicationError(
            f"A valid {kind} token of this job is required.", code="bad_token", status=401
        )
    if kind == "job" and job.is_terminal:
        raise AccessDeniedError(f"The job is {job.state}.", code="job_finished")
    return job


def job_for_model_download(request: Request, job_id: int) -> FederatedJob:
    """The job whose base model the request may download: with the job token (the
    ServerApp's, from its credentials file), or with a node token (``atn_...``) of an active
    node serving one of the job's approved datasets while the job is queued or running.

    401 without a valid token (another job's, a revoked node's); 403 for a node that serves no
    dataset of the job (``node_not_in_job``) or a job that is not running.
    """
    secret = _header_secret(request)
    job = FederatedJob.objects.select_related("base_version__model").filter(pk=job_id).first()
    if secret.startswith(NODE_TOKEN_PREFIX):
        node = node_authenticate(token=secret)
        if node is None or not node.owner.is_active:
            raise ApplicationError("Invalid or revoked node token.", code="bad_token", status=401)
        if job is None or not node_serves_job(node=node, job=job):
            raise AccessDeniedError(
                "This node serves no dataset of that job.", code="node_not_in_job"
            )
        if job.state not in (FederatedJob.State.QUEUED, FederatedJob.State.RUNNING):
            raise AccessDeniedError(f"The job is {job.state}.", code="job_not_running")
        return job
    return job_for_token(request, job_id, kind="job")


def own_node(request: Request, node_id: int) -> Node:
    node = Node.objects.filter(pk=node_id).first()
    user = request.user
    if node is None or not (user.pk == node.owner_id or user.is_staff):
        raise NotFoundError("No such node.", code="node_not_found")
    return node


class NodeTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer atn_...`` (see :class:`NodeTokenAuthentication`)."""

    target_class = "federated.auth.NodeTokenAuthentication"
    name = "NodeToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "atn_..."}


class UserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "federated.auth.UserAuthentication"
    name = "UserApiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "atl_..."}
