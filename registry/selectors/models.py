"""Models: who may open which, what browse lists, search, the one filter-and-sort of every
listing (API and pages), the cover image, and a model with its versions."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    F,
    FloatField,
    IntegerField,
    Lookup,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)

from registry.models import (
    COVER_SAMPLE_Q,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    SampleRole,
    VersionStatus,
)
from registry.selectors.common import NEWEST, NEWEST_PUBLISHED, User

MODEL_ORDERINGS: dict[str, tuple[str, ...]] = {
    "newest": NEWEST,
    "downloads": ("-download_count", *NEWEST),
    "rating": ("-rating_avg", "-rating_count", *NEWEST),
    "price_low": ("price_now", *NEWEST),
    "price_high": ("-price_now", *NEWEST),
}
RELEVANCE = "relevance"
MODEL_SORTS = (*MODEL_ORDERINGS, RELEVANCE)
MAX_FILTER_TAGS = 10
FREE, PAID = "free", "paid"
PRICE_FILTERS = (FREE, PAID)


@dataclass(frozen=True)
class ModelFilters:
    """What a model listing was asked for, already parsed (:mod:`registry.filters` for the
    API, :class:`registry.forms.BrowseForm` for the browse page). Empty means "any";
    ``sort`` empty means relevance when ``q`` is given, else newest."""

    q: str = ""
    kinds: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    license: str = ""
    creator: str = ""
    price: str = ""  # "free", "paid" or empty (any)
    sort: str = ""


def visible_models(user: User) -> QuerySet[Model]:
    """Models the user may open: listed ones, plus unlisted by link, plus their own."""
    return Model.objects.visible_to(user)


def listed_models(user: User | None = None) -> QuerySet[Model]:
    """Models that appear in browse and search (``ModelQuerySet.listed``); the same for
    every viewer (``user`` is accepted for the callers that pass one)."""
    return Model.objects.listed()


def own_models(user: User) -> QuerySet[Model]:
    """Everything the user owns: drafts, private, unlisted and removed models included."""
    if not user.is_authenticated:
        return Model.objects.none()
    return Model.objects.filter(owner_id=user.pk)


_WORD = re.compile(r"[^\W_]+")


def _prefix_tsquery(q: str) -> str:
    """``sprit:* & !retro`` for ``Sprit -retro``: every word as a prefix, exclusions kept.

    Phrases and ``or`` are left to the web-search query alone.
    """
    if '"' in q or " or " in f" {q.lower()} ":
        return ""
    terms: list[str] = []
    for token in q.split()[:8]:
        negated = token.startswith("-")
        terms += [f"!{w}" if negated else f"{w}:*" for w in _WORD.findall(token)]
    if not any(not t.startswith("!") for t in terms):
        return ""
    return " & ".join(terms)


_HASH = re.compile(r"[0-9a-f]{8,64}")
MIN_TRIGGER_CHARS = 3  # a trigram index needs three characters; shorter words match nothing


class _EqualsAny(Lookup):
    """``lhs = ANY(rhs)`` with ``rhs`` an ``ARRAY(subquery)``: PostgreSQL runs the subquery
    once (an init plan) and looks the ids up in the primary key's index, so the condition can
    join the full-text match in one bitmap OR instead of forcing a scan of every model (as
    ``IN (subquery)`` inside an ``OR`` does)."""

    lookup_name = "equals_any"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} = ANY({rhs})", (*lhs_params, *rhs_params)


def _model_in(versions: QuerySet[ModelVersion]) -> Q:
    """The model has one of ``versions``: ``= ANY(ARRAY(...))`` on PostgreSQL, ``IN``
    elsewhere."""
    model_ids = versions.values("model_id")
    if connection.vendor == "postgresql":
        from django.contrib.postgres.expressions import ArraySubquery

        return Q(_EqualsAny(F("pk"), ArraySubquery(model_ids)))
    return Q(pk__in=model_ids)


def _hash_or_trigger_q(q: str, *, published_only: bool) -> Q | None:
    """A version of the model has a file whose SHA-256 starts with ``q`` (8 to 64 hex digits:
    an AutoV2 is the first 10, as Civitai and A1111 show it) or a trigger word containing
    ``q`` (3 characters or more); only published versions count unless it is the owner's own
    listing.

    Both use indexes on PostgreSQL (bench/browse.py): the trigger word the trigram index on
    ``UPPER(trigger_words::text)`` (migration 0007), the hash prefix the file's ``blob_id``
    pattern index (``LIKE 'abc%'``); each is one uncorrelated subquery, run once per search.
    """
    versions = ModelVersion.objects.order_by()
    if published_only:
        versions = versions.filter(status=VersionStatus.PUBLISHED)
    matches: list[Q] = []
    if len(q) >= MIN_TRIGGER_CHARS:
        matches.append(_model_in(versions.filter(trigger_words__icontains=q)))
    if _HASH.fullmatch(q.lower()):
        files = ModelFile.objects.filter(blob__sha256__startswith=q.lower())
        matches.append(_model_in(versions.filter(pk__in=files.values("version_id"))))
    return reduce(operator.or_, matches) if matches else None


def search_models(qs: QuerySet[Model], q: str, *, published_only: bool = True) -> QuerySet[Model]:
    """Ranked full-text search on PostgreSQL; ``icontains`` on name and description elsewhere.
    A file hash (SHA-256 or AutoV2 prefix) or a trigger word finds its model too, ranked
    first.

    On PostgreSQL a model matches the web-search query or, for partial words, every word as a
    prefix (``sprit`` finds "sprite"); both use the GIN index on the search document. The
    ``rank`` annotation orders by relevance.
    """
    exact = _hash_or_trigger_q(q, published_only=published_only)
    if connection.vendor != "postgresql":
        words = Q(name__icontains=q) | Q(description__icontains=q)
        return qs.filter(words | exact if exact else words).annotate(rank=Value(0.0))
    from django.contrib.postgres.search import SearchQuery, SearchRank

    query = SearchQuery(q, search_type="websearch")
    match = Q(search_vector=query)
    prefix = _prefix_tsquery(q)
    if prefix:
        match |= Q(search_vector=SearchQuery(prefix, search_type="raw"))
    if exact is None:
        return qs.annotate(rank=SearchRank(F("search_vector"), query)).filter(match)
    rank = SearchRank(F("search_vector"), query) + Case(
        When(exact, then=Value(1.0)), default=Value(0.0), output_field=FloatField()
    )
    return qs.annotate(rank=rank).filter(match | exact)


# --- the one cover-image rule ---------------------------------------------------------------


# A sample image a training job drew (publishing's round grid strips carry ``{"job": id}`` in
# their parameters): shown on the page, but a cover only when the version has nothing else.
TRAINING_GRID_KEY = "job"


def is_training_grid(image: SampleImage) -> bool:
    return isinstance(image.parameters, dict) and TRAINING_GRID_KEY in image.parameters


def cover_of(images: Sequence[SampleImage]) -> SampleImage | None:
    """The cover among one version's images, in the owner's order: the first that may be a
    cover (not the "base alone" half of a pair, ``COVER_SAMPLE_Q``) and is not a training
    job's grid strip, else the first grid strip. For a LoRA trained on the site that is its
    first rendered "with LoRA" half, not the strip of the last round's grid."""
    candidates = [i for i in images if i.role != SampleRole.BASE]
    return next((i for i in candidates if not is_training_grid(i)), None) or next(
        iter(candidates), None
    )


def _cover_image(images: Q, ordering: tuple[str, ...]) -> Subquery:
    """The cover (:func:`cover_of`, in SQL): of the first version the listing shows
    (``images`` keeps the images of the versions shown, ``ordering`` is the order the
    versions are shown in), the first sample image in the owner's order (``position``) that
    is not the "base alone" half of a LoRA's pair (``COVER_SAMPLE_Q``), a training job's
    grid strip only when there is nothing else."""
    grid_last = Case(
        When(parameters__has_key=TRAINING_GRID_KEY, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )
    cover = (
        SampleImage.objects.filter(version__model=OuterRef("pk"))
        .filter(images, COVER_SAMPLE_Q)
        .order_by(*(f"-version__{field[1:]}" for field in ordering), grid_last, "position", "pk")
        .values("image")[:1]
    )
    return Subquery(cover)


def with_versions_and_cover(
    qs: QuerySet[Model],
    *,
    versions: QuerySet[ModelVersion],
    images: Q,
    ordering: tuple[str, ...],
) -> QuerySet[Model]:
    """Owner, tags, the ``versions`` shown (``shown_versions``, in ``ordering``, newest
    first) and the cover image of the first of them (``cover_image``; ``images`` is the same
    filter as ``versions``, on sample images) in a constant number of queries, whatever the
    page size: the page, then one query each for tags and versions."""
    return (
        qs.select_related("owner")
        .annotate(cover_image=_cover_image(images, ordering))
        .prefetch_related(
            "tags",
            Prefetch("versions", queryset=versions.order_by(*ordering), to_attr="shown_versions"),
        )
    )


def with_listing_data(qs: QuerySet[Model], *, published_only: bool) -> QuerySet[Model]:
    """A listing's models: their published versions, newest published first, or (the
    owner's own listing) all their versions, newest first."""
    if published_only:
        return with_versions_and_cover(
            qs,
            versions=ModelVersion.objects.filter(status=VersionStatus.PUBLISHED),
            images=Q(version__status=VersionStatus.PUBLISHED),
            ordering=NEWEST_PUBLISHED,
        )
    return with_versions_and_cover(
        qs, versions=ModelVersion.objects.all(), images=Q(), ordering=NEWEST
    )


# --- what the shown version costs and whether the viewer owns it (the marketplace's hook) ----

# Annotates ``price_now`` (credits the shown version costs right now, 0 when free) and
# ``owned`` (the viewer bought it or shares its revenue) on models whose shown version's pk
# is the ``shown_version_id`` annotation. The marketplace installs the real one when its app
# loads (``set_price_annotator``), so the registry never imports it; without it all is free.
PriceAnnotator = Callable[[QuerySet[Model], User], QuerySet[Model]]


def _nothing_for_sale(qs: QuerySet[Model], user: User) -> QuerySet[Model]:
    return qs.annotate(
        price_now=Value(0, output_field=IntegerField()),
        owned=Value(False, output_field=BooleanField()),
    )


_price_annotator: PriceAnnotator = _nothing_for_sale


def set_price_annotator(annotator: PriceAnnotator) -> None:
    global _price_annotator
    _price_annotator = annotator


def with_price(qs: QuerySet[Model], *, user: User, published_only: bool) -> QuerySet[Model]:
    """``shown_version_id`` (the version a card shows: the newest published one, or in an
    owner's own listing the newest of all), its ``price_now`` and whether ``user`` ``owned``
    it. Filters and sorts on price read these annotations; no extra query per model."""
    versions = ModelVersion.objects.filter(model=OuterRef("pk"))
    if published_only:
        versions = versions.filter(status=VersionStatus.PUBLISHED).order_by(*NEWEST_PUBLISHED)
    else:
        versions = versions.order_by(*NEWEST)
    qs = qs.annotate(shown_version_id=Subquery(versions.values("pk")[:1]))
    return _price_annotator(qs, user)


# --- the one filter and sort of every model listing -----------------------------------------


def model_list(*, user: User, filters: ModelFilters, mine: bool = False) -> QuerySet[Model]:
    """Listed models (or, with ``mine``, the user's own), filtered, searched and sorted,
    each with its shown version's price and whether ``user`` owns it (:func:`with_price`).

    Filters over versions (base model, license) look at published versions only, except in
    an owner's own listing, where drafts count too.
    """
    qs = own_models(user) if mine else listed_models()
    qs = with_price(qs, user=user, published_only=not mine)
    qs = _filtered(qs, filters, published_only=not mine)
    q = filters.q.strip()
    if q:
        qs = search_models(qs, q, published_only=not mine)
    return with_listing_data(
        qs.order_by(*_model_ordering(filters.sort, q)), published_only=not mine
    )


def _filtered(
    qs: QuerySet[Model], filters: ModelFilters, *, published_only: bool
) -> QuerySet[Model]:
    def with_version(**lookup: object) -> Q:
        versions = ModelVersion.objects.filter(model=OuterRef("pk"), **lookup)
        if published_only:
            versions = versions.filter(status=VersionStatus.PUBLISHED)
        return Q(Exists(versions))

    if filters.kinds:
        qs = qs.filter(kind__in=filters.kinds)
    if filters.base_models:
        qs = qs.filter(with_version(base_model__in=filters.base_models))
    if filters.license.strip():
        qs = qs.filter(with_version(license_code__iexact=filters.license.strip()))
    if filters.creator:
        qs = qs.filter(owner__username__iexact=filters.creator)
    # ``price_now`` is with_price's annotation, hence Q: the stubs know only model fields.
    if filters.price == FREE:
        qs = qs.filter(Q(price_now=0))
    elif filters.price == PAID:
        qs = qs.filter(Q(price_now__gt=0))
    for tag in filters.tags[:MAX_FILTER_TAGS]:
        # One join per tag; (item, tag) pairs are unique, so no row is repeated.
        qs = qs.filter(tags__name=tag)
    return qs


def _model_ordering(sort: str, q: str) -> tuple[str, ...]:
    if sort == RELEVANCE or (q and not sort):
        if q and connection.vendor == "postgresql":
            return ("-rank", "-download_count", "-pk")
        return MODEL_ORDERINGS["newest"]
    return MODEL_ORDERINGS.get(sort, MODEL_ORDERINGS["newest"])


def model_detail(*, model_id: int, user: User) -> Model | None:
    """A model the user may open, with owner, tags, the versions they may see (newest
    first, ``shown_versions``), the cover image of the first of them, and its newest
    published version's price and whether the user owns it (:func:`with_price`)."""
    versions = ModelVersion.objects.visible_to(user)
    return (
        with_versions_and_cover(
            with_price(visible_models(user), user=user, published_only=True),
            versions=versions,
            images=Q(version__in=versions.values("pk")),
            ordering=NEWEST,
        )
        .filter(pk=model_id)
        .first()
    )
