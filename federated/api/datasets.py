"""Private datasets: list one (its manifest and terms, never images), browse them as a
trainer, the owner's own with their privacy budget, change the terms."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from federated import selectors
from federated.api.common import TAGS, owned_terms
from federated.models import DatasetTerms, TrainingUse
from federated.services.datasets import (
    TERMS_FIELDS,
    dataset_terms_update,
    federated_dataset_create,
)
from marketplace.api.common import WholeNumberField
from registry.api.common import has_nul, page_response, paginated
from registry.models import Visibility
from registry.serializers import aggregate_stats


class TermsSerializer(serializers.Serializer):
    price_per_example_round = WholeNumberField(min_value=0, required=False)
    price_per_job = WholeNumberField(min_value=0, required=False)
    allowed_families = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_uses = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Uses: " + ", ".join(TrainingUse.values),
    )
    commercial_use = serializers.BooleanField(required=False)
    epsilon_per_job = serializers.FloatField(required=False)
    delta = serializers.FloatField(required=False)
    epsilon_lifetime = serializers.FloatField(required=False)
    approval = serializers.ChoiceField(choices=["auto", "manual"], required=False)
    require_dp = serializers.BooleanField(required=False)


class TermsOutputSerializer(serializers.ModelSerializer):
    pricing = serializers.CharField()
    allowed_families = serializers.ListField(child=serializers.CharField())
    allowed_uses = serializers.ListField(child=serializers.CharField())
    approval = serializers.CharField()

    class Meta:
        model = DatasetTerms
        fields = ("pricing", *TERMS_FIELDS, "updated_at")


class NodeRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    last_seen_at = serializers.DateTimeField(allow_null=True)


class BudgetJobSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    state = serializers.CharField()
    epsilon = serializers.FloatField()
    reserved = serializers.FloatField()


class BudgetSerializer(serializers.Serializer):
    epsilon_per_job = serializers.FloatField()
    epsilon_lifetime = serializers.FloatField()
    delta = serializers.FloatField()
    spent = serializers.FloatField()
    reserved = serializers.FloatField()
    remaining = serializers.FloatField()
    jobs = BudgetJobSerializer(many=True)


class FederatedDatasetSerializer(serializers.Serializer):
    """A private dataset as trainers see it: aggregate statistics only, never file names."""

    dataset_version_id = serializers.IntegerField()
    dataset_id = serializers.IntegerField(source="dataset_version.dataset_id")
    name = serializers.CharField(source="dataset_version.dataset.name")
    description = serializers.CharField(source="dataset_version.dataset.description")
    owner = serializers.CharField(source="dataset_version.dataset.owner.username")
    version = serializers.CharField(source="dataset_version.name")
    image_count = serializers.IntegerField(source="dataset_version.image_count")
    manifest_hash = serializers.CharField(source="dataset_version.manifest_hash")
    stats = serializers.SerializerMethodField()
    node = NodeRefSerializer()
    terms = TermsOutputSerializer(source="*")

    def get_stats(self, terms: DatasetTerms) -> dict[str, Any]:
        manifest = terms.dataset_version.manifest
        return aggregate_stats(manifest if isinstance(manifest, dict) else {})


class OwnerDatasetSerializer(FederatedDatasetSerializer):
    """One of the owner's datasets: with the full manifest, the budget and the earnings."""

    manifest = serializers.JSONField(source="dataset_version.manifest")
    budget = BudgetSerializer()
    earned = serializers.IntegerField()
    jobs = serializers.IntegerField()


def _owner_row(terms: DatasetTerms) -> selectors.OwnerDataset:
    earnings = selectors.earnings_for_dataset(terms=terms)
    return selectors.OwnerDataset(
        terms, selectors.dataset_budget(terms=terms), sum(e.earned for e in earnings), len(earnings)
    )


def _owner_data(row: selectors.OwnerDataset) -> dict[str, Any]:
    data = dict(FederatedDatasetSerializer(row.terms).data)
    data.update(
        manifest=row.terms.dataset_version.manifest,
        budget=BudgetSerializer(row.budget).data,
        earned=row.earned,
        jobs=row.jobs,
    )
    return data


class FederatedDatasetListCreateApi(APIView):
    """GET: private datasets trainers may pick, with their terms. POST: list a private dataset
    served by one of the caller's nodes (the node's manifest, never images) with its terms."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        node_id = serializers.IntegerField()
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(
            max_length=50_000, required=False, allow_blank=True, default=""
        )
        tags = serializers.ListField(
            child=serializers.CharField(max_length=64), required=False, default=list
        )
        visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PUBLIC)
        dataset_id = serializers.IntegerField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Add a version to this dataset.",
        )
        manifest = serializers.JSONField()
        terms = TermsSerializer()

        def validate_manifest(self, value: object) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise serializers.ValidationError("Must be a JSON object.")
            if has_nul(value):
                raise serializers.ValidationError("Must not hold NUL characters.")
            return value

    @extend_schema(
        operation_id="federated_datasets_list",
        responses=paginated("PaginatedFederatedDatasetList", FederatedDatasetSerializer(many=True)),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        available = selectors.federated_datasets_available(user=request.user)
        return page_response(request, self, available, FederatedDatasetSerializer)

    @extend_schema(request=InputSerializer, responses={201: OwnerDatasetSerializer}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        terms = federated_dataset_create(owner=signed_in(request), **data.validated_data)
        return Response(_owner_data(_owner_row(terms)), status=status.HTTP_201_CREATED)


class FederatedDatasetMineApi(APIView):
    """The caller's private datasets: manifest, terms, privacy budget and earnings."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OwnerDatasetSerializer(many=True), tags=TAGS)
    def get(self, request: Request) -> Response:
        rows = selectors.datasets_of_owner(owner=signed_in(request))
        return Response([_owner_data(row) for row in rows])


class FederatedDatasetDetailApi(APIView):
    """One private dataset and its terms (its owner also sees the manifest and budget)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=FederatedDatasetSerializer, tags=TAGS)
    def get(self, request: Request, dataset_version_id: int) -> Response:
        terms = selectors.federated_terms_for(
            dataset_version_id=dataset_version_id, user=request.user
        )
        if terms is None:
            raise NotFoundError("No such dataset.", code="dataset_not_found")
        if request.user.pk == terms.dataset_version.dataset.owner_id:
            return Response(_owner_data(_owner_row(terms)))
        return Response(FederatedDatasetSerializer(terms).data)


class DatasetTermsUpdateApi(APIView):
    """Change a dataset's terms (its owner only); jobs already launched keep theirs."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(TermsSerializer):
        node_id = serializers.IntegerField(required=False)

    @extend_schema(request=InputSerializer, responses=TermsOutputSerializer, tags=TAGS)
    def patch(self, request: Request, dataset_version_id: int) -> Response:
        terms = selectors.federated_terms_for(
            dataset_version_id=dataset_version_id, user=request.user
        )
        if terms is None:
            raise NotFoundError("No such dataset.", code="dataset_not_found")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        node_id = changes.pop("node_id", None)
        terms = dataset_terms_update(
            terms=terms, user=signed_in(request), changes=changes, node_id=node_id
        )
        return Response(TermsOutputSerializer(terms).data)


class DatasetBudgetApi(APIView):
    """The privacy budget of one of the caller's datasets: epsilon spent per job and in
    total, reserved by running jobs, and remaining."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=BudgetSerializer, tags=TAGS)
    def get(self, request: Request, dataset_version_id: int) -> Response:
        terms = owned_terms(request, dataset_version_id)
        return Response(BudgetSerializer(selectors.dataset_budget(terms=terms)).data)
