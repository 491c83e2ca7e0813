"""The studio's REST API: ask for a generation, follow it, list one's own, share, attach.

``POST /api/v1/generations`` answers 202 with the queued generation; ``GET
/api/v1/generations/{id}`` gives its status and progress, then the image URL and the A1111
parameters. The PNG itself is served by :func:`studio.views.generation_image` (session or
API token), to its owner, or to anyone once the owner made it public.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from registry.api.common import PAGE_PARAMETERS, page_response, paginated
from registry.selectors.versions import visible_versions
from registry.serializers import SampleImageSerializer
from sdcore.generate import SAMPLERS
from studio.models import Generation, GenerationStatus
from studio.selectors import (
    embeddings_of,
    generation_eta,
    generation_get,
    generation_list,
    loras_of,
    progress_label,
    queue_position,
    seconds_per_step,
)
from studio.services.generations import (
    ResourceInput,
    generation_cancel,
    generation_create,
    generation_sample_attach,
    generation_visibility_set,
)

# The DRF throttle scope of generation requests. It is set only when settings give it a rate
# (REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["generation"]): DRF refuses a scope without one.
GENERATION_THROTTLE_SCOPE = "generation"
GENERATION_RATE_SET = GENERATION_THROTTLE_SCOPE in (api_settings.DEFAULT_THROTTLE_RATES or {})


def _not_found() -> NotFoundError:
    return NotFoundError("No such generation, or it is not visible to you.")


class GenerationResourceInputSerializer(serializers.Serializer):
    version_id = serializers.IntegerField(min_value=1)
    weight = serializers.FloatField(default=1.0)


class GenerationResourceSerializer(serializers.Serializer):
    version_id = serializers.IntegerField(allow_null=True)
    name = serializers.CharField(help_text="A1111's name: the LoRA file's stem, or the token.")
    display_name = serializers.CharField()
    weight = serializers.FloatField()


class GenerationProgressSerializer(serializers.Serializer):
    step = serializers.IntegerField(source="progress_step")
    total = serializers.IntegerField(source="steps")
    text = serializers.SerializerMethodField(
        help_text="What the page's badge and bar say: Queued, Loading the model, Step N of M."
    )
    eta_seconds = serializers.SerializerMethodField(
        help_text="Seconds until it is likely done (null when finished or unknown)."
    )

    def get_text(self, obj: Generation) -> str:
        return progress_label(obj)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_eta_seconds(self, obj: Generation) -> int | None:
        return generation_eta(
            obj, ahead=_queue_position(self.context, obj), pace=_pace(self.context)
        )


def _queue_position(context: Mapping[str, Any], obj: Generation) -> int | None:
    """:func:`queue_position`, read once per generation and response (the context is shared
    by the nested serializers)."""
    if not isinstance(context, dict):
        return queue_position(obj)
    cache: dict[int, int | None] = context.setdefault("_queue_positions", {})
    if obj.pk not in cache:
        cache[obj.pk] = queue_position(obj)
    return cache[obj.pk]


def _pace(context: Mapping[str, Any]) -> Callable[[], float | None]:
    """:func:`seconds_per_step`, read at most once per response."""

    def read() -> float | None:
        if not isinstance(context, dict):
            return seconds_per_step()
        if "_pace" not in context:
            context["_pace"] = seconds_per_step()
        pace: float | None = context["_pace"]
        return pace

    return read


class GenerationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=GenerationStatus.choices)
    progress = GenerationProgressSerializer(source="*")
    queue_position = serializers.SerializerMethodField(
        help_text="Queued generations ahead of this one (null unless queued)."
    )
    error_code = serializers.CharField(help_text="Empty unless the generation failed.")
    error = serializers.CharField(help_text="Why it failed, for people.")
    prompt = serializers.CharField()
    negative_prompt = serializers.CharField()
    seed = serializers.IntegerField()
    steps = serializers.IntegerField()
    guidance = serializers.FloatField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    sampler = serializers.CharField()
    base_version_id = serializers.IntegerField(allow_null=True)
    base_name = serializers.CharField()
    baseline_id = serializers.IntegerField(
        allow_null=True, help_text="The same request and seed without the LoRAs (compare)."
    )
    loras = serializers.SerializerMethodField()
    embeddings = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField(
        help_text="The PNG (with A1111 parameters in its text chunk) once done, else null."
    )
    page_url = serializers.SerializerMethodField()
    parameters = serializers.CharField(help_text="The A1111 parameters text, once done.")
    is_public = serializers.BooleanField()
    device = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_queue_position(self, obj: Generation) -> int | None:
        return _queue_position(self.context, obj)

    # Serializer(many=True) makes a ListSerializer, whose .data is a list; the stubs type the
    # call as the Serializer (a dict's data).
    @extend_schema_field(GenerationResourceSerializer(many=True))
    def get_loras(self, obj: Generation) -> list[dict[str, Any]]:
        return GenerationResourceSerializer(loras_of(obj), many=True).data  # type: ignore[return-value]

    @extend_schema_field(GenerationResourceSerializer(many=True))
    def get_embeddings(self, obj: Generation) -> list[dict[str, Any]]:
        return GenerationResourceSerializer(embeddings_of(obj), many=True).data  # type: ignore[return-value]

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_image_url(self, obj: Generation) -> str | None:
        if obj.status != GenerationStatus.SUCCEEDED or not obj.image:
            return None
        return self._absolute(reverse("studio:generation-image", args=[obj.pk]))

    @extend_schema_field(OpenApiTypes.URI)
    def get_page_url(self, obj: Generation) -> str:
        return self._absolute(reverse("studio:generation-detail", args=[obj.pk]))


def _data(request: Request, generation: Generation) -> dict[str, Any]:
    fresh = generation_get(generation_id=generation.pk, user=request.user) or generation
    return GenerationOutputSerializer(fresh, context={"request": request}).data


class GenerationListCreateApi(APIView):
    """GET: the caller's generations, newest first. POST: ask for one (202, queued)."""

    permission_classes = [IsAuthenticated]
    throttle_scope = GENERATION_THROTTLE_SCOPE if GENERATION_RATE_SET else None

    class InputSerializer(serializers.Serializer):
        base_version_id = serializers.IntegerField(
            min_value=1, help_text="A checkpoint version (SD 1.x or 2.x)."
        )
        prompt = serializers.CharField(trim_whitespace=True)
        negative_prompt = serializers.CharField(required=False, allow_blank=True, default="")
        seed = serializers.IntegerField(
            required=False,
            allow_null=True,
            default=None,
            help_text="0 to 4294967295; -1 or null for a random seed.",
        )
        steps = serializers.IntegerField(
            required=False,
            default=None,
            allow_null=True,
            help_text="1 to the server's maximum; default: the checkpoint's native steps.",
        )
        guidance = serializers.FloatField(default=7.0, help_text="CFG scale, 0 to 30.")
        width = serializers.IntegerField(
            required=False,
            default=None,
            allow_null=True,
            help_text="A multiple of 8; default: the checkpoint's native size.",
        )
        height = serializers.IntegerField(
            required=False,
            default=None,
            allow_null=True,
            help_text="A multiple of 8; default: the checkpoint's native size.",
        )
        compare = serializers.BooleanField(
            default=False,
            help_text="With LoRAs: also make the same request and seed without them "
            "(``baseline_id``), to show base and base + LoRA side by side.",
        )
        sampler = serializers.ChoiceField(choices=list(SAMPLERS), default="Euler")
        loras = GenerationResourceInputSerializer(many=True, required=False, default=list)
        embeddings = GenerationResourceInputSerializer(many=True, required=False, default=list)

    def get_throttles(self) -> list[BaseThrottle]:
        throttles = list(super().get_throttles())
        scoped = any(isinstance(t, ScopedRateThrottle) for t in throttles)
        if self.request.method == "POST" and self.throttle_scope and not scoped:
            throttles.append(ScopedRateThrottle())
        return throttles

    @extend_schema(
        operation_id="generations_list",
        parameters=[p for p in PAGE_PARAMETERS if p.name != "mine"],
        responses={
            200: paginated("PaginatedGenerationList", GenerationOutputSerializer(many=True))
        },
    )
    def get(self, request: Request) -> Response:
        return page_response(
            request,
            self,
            generation_list(user=signed_in(request)),
            GenerationOutputSerializer,
            context={"request": request},
        )

    @extend_schema(
        operation_id="generations_create",
        request=InputSerializer,
        responses={202: GenerationOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        generation = generation_create(
            user=signed_in(request),
            loras=[ResourceInput(**item) for item in values.pop("loras")],
            embeddings=[ResourceInput(**item) for item in values.pop("embeddings")],
            **values,
        )
        body = _data(request, generation)
        return Response(
            body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["page_url"]}
        )


class GenerationDetailApi(APIView):
    """GET: status, progress, then the image and its parameters. PATCH: share it or not."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        is_public = serializers.BooleanField(
            help_text="Anyone with the link may see the image (default: only you)."
        )

    @extend_schema(operation_id="generations_retrieve", responses={200: GenerationOutputSerializer})
    def get(self, request: Request, generation_id: int) -> Response:
        generation = generation_get(generation_id=generation_id, user=request.user)
        if generation is None:
            raise _not_found()
        return Response(GenerationOutputSerializer(generation, context={"request": request}).data)

    @extend_schema(
        operation_id="generations_update",
        request=InputSerializer,
        responses={200: GenerationOutputSerializer},
    )
    def patch(self, request: Request, generation_id: int) -> Response:
        generation = generation_get(generation_id=generation_id, user=request.user)
        if generation is None:
            raise _not_found()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        generation_visibility_set(
            generation=generation, user=signed_in(request), **data.validated_data
        )
        return Response(_data(request, generation))


class GenerationCancelApi(APIView):
    """Stop a queued or running generation of yours: 200 with it, now cancelled; 409 when it
    already finished; 404 for another user's (403 when theirs is public)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="generations_cancel", request=None, responses={200: GenerationOutputSerializer}
    )
    def post(self, request: Request, generation_id: int) -> Response:
        user = signed_in(request)
        generation = generation_get(generation_id=generation_id, user=user)
        if generation is None:
            raise _not_found()
        generation_cancel(generation=generation, user=user)
        return Response(_data(request, generation))


class GenerationSampleCreateApi(APIView):
    """Attach the image as a sample image of a version that made it and that you own."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        version_id = serializers.IntegerField(min_value=1)

    @extend_schema(
        operation_id="generations_samples_create",
        request=InputSerializer,
        responses={201: SampleImageSerializer},
    )
    def post(self, request: Request, generation_id: int) -> Response:
        user = signed_in(request)
        generation = generation_get(generation_id=generation_id, user=user)
        if generation is None:
            raise _not_found()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = visible_versions(user).filter(pk=data.validated_data["version_id"]).first()
        if version is None:
            raise NotFoundError(
                "version_id: no such model version, or it is not visible to you.",
                details={"field": "version_id"},
            )
        image = generation_sample_attach(generation=generation, user=user, version=version)
        return Response(
            SampleImageSerializer(image, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )
