"""A version's sample images, by their owner: the order (the first is the cover), removal.
Adding one is ``VersionImageCreateApi`` (multipart) in ``registry.api.models``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from registry.models import ModelVersion, SampleImage
from registry.selectors.versions import visible_versions
from registry.serializers import SampleImageSerializer
from registry.services.images import MAX_IMAGES_PER_VERSION
from registry.services.samples import sample_image_remove, sample_images_order


def _version(request: Request, version_id: int) -> ModelVersion:
    version = (
        visible_versions(signed_in(request)).select_related("model").filter(pk=version_id).first()
    )
    if version is None:
        raise NotFoundError(f"No model version {version_id}, or it is not visible to you.")
    return version


class VersionImageOrderApi(APIView):
    """Put every image of a version in a new order; the first becomes the cover."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        image_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1),
            allow_empty=False,
            max_length=MAX_IMAGES_PER_VERSION,
        )

    @extend_schema(
        operation_id="versions_images_order",
        request=InputSerializer,
        responses={200: SampleImageSerializer(many=True)},
    )
    def put(self, request: Request, version_id: int) -> Response:
        version = _version(request, version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ordered = sample_images_order(
            version=version, user=signed_in(request), image_ids=data.validated_data["image_ids"]
        )
        return Response(
            SampleImageSerializer(ordered, many=True, context={"request": request}).data
        )


class SampleImageDeleteApi(APIView):
    """Remove one image (with the other half of its pair, if it has one)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="images_delete", request=None, responses={204: None})
    def delete(self, request: Request, image_id: int) -> Response:
        user = signed_in(request)
        image = SampleImage.objects.select_related("version__model").filter(pk=image_id).first()
        if image is None or not visible_versions(user).filter(pk=image.version_id).exists():
            raise NotFoundError(f"No image {image_id}, or it is not visible to you.")
        sample_image_remove(image=image, user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)
