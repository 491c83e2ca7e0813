"""Reviews: one per user per version, verified for buyers; paid models only by buyers."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count

from core.errors import ApplicationError, ConflictError
from marketplace.models import Review
from marketplace.selectors import is_entitled, review_refusal
from registry.models import ModelVersion
from registry.services.catalog import model_rating_set


@transaction.atomic
def review_create(*, user: User, version: ModelVersion, rating: object, text: str = "") -> Review:
    """Review a version ``review_refusal`` allows; ``verified`` if you are entitled to it.

    Also refreshes the model's rating average and count (the registry's display fields).
    """
    refusal = review_refusal(user=user, version=version)
    if refusal is not None:
        raise refusal
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ApplicationError("rating must be a whole number from 1 to 5.", code="bad_rating")
    try:
        with transaction.atomic():
            review = Review.objects.create(
                user_id=user.pk,
                model_version=version,
                rating=rating,
                text=text[:5000],
                verified=is_entitled(user, version),
            )
    except IntegrityError as err:
        raise ConflictError("You already reviewed this version.", code="already_reviewed") from err
    stats = Review.objects.filter(model_version__model_id=version.model_id).aggregate(
        avg=Avg("rating"), n=Count("pk")
    )
    model_rating_set(model_id=version.model_id, average=float(stats["avg"] or 0), count=stats["n"])
    return review
