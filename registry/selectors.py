"""Every read beyond a plain get: visibility, listing, search, lineage."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db import connection
from django.db.models import F, OuterRef, Prefetch, Q, QuerySet, Subquery, Value

from core.errors import ApplicationError
from registry.models import (
    Dataset,
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    VersionStatus,
)

User = AuthUser | AnonymousUser


def visible_models(user: User) -> QuerySet[Model]:
    """Models the user may open: listed ones, plus unlisted by link, plus their own."""
    return Model.objects.visible_to(user)


def listed_models(user: User | None = None) -> QuerySet[Model]:
    """Models that appear in browse and search (``ModelQuerySet.listed``)."""
    return Model.objects.listed()


def _listed_models() -> QuerySet[Model]:
    return listed_models()


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


def search_models(qs: QuerySet[Model], q: str) -> QuerySet[Model]:
    """Ranked full-text search on PostgreSQL; ``icontains`` on name and description elsewhere.

    On PostgreSQL a model matches the web-search query or, for partial words, every word as a
    prefix (``sprit`` finds "sprite"); both use the GIN index on the search document. The
    ``rank`` annotation orders by relevance.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return qs.filter(Q(name__icontains=q) | Q(description__icontains=q)).annotate(
            rank=Value(0.0)
        )
    from django.contrib.postgres.search import SearchQuery, SearchRank

    query = SearchQuery(q, search_type="websearch")
    match = Q(search_vector=query)
    prefix = _prefix_tsquery(q)
    if prefix:
        match |= Q(search_vector=SearchQuery(prefix, search_type="raw"))
    return qs.annotate(rank=SearchRank(F("search_vector"), query)).filter(match)


def visible_versions(user: User) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("model", "model__owner").visible_to(user)


def version_with_files(version_id: int, user: User) -> ModelVersion | None:
    return (
        visible_versions(user)
        .prefetch_related(
            Prefetch("files", queryset=ModelFile.objects.select_related("blob")), "images"
        )
        .filter(pk=version_id)
        .first()
    )


def files_by_hash(hash_value: str) -> QuerySet[ModelFile]:
    """Files whose bytes match any stored hash type, case-insensitively."""
    h = hash_value.strip().lower()
    if not h or len(h) > 64:
        return ModelFile.objects.none()
    match = (
        Q(blob__sha256=h)
        | Q(blob__autov1=h)
        | Q(blob__autov2=h)
        | Q(blob__crc32=h)
        | Q(blob__blake3=h)
        | Q(blob__autov3=h)
    )
    if len(h) == 12:  # AutoV3 as Civitai shows it: the first 12 digits
        match |= Q(blob__autov3__startswith=h)
    return ModelFile.objects.filter(match).select_related("blob", "version", "version__model")


def lineage_parents(version: ModelVersion) -> QuerySet[Lineage]:
    return version.parents.select_related(
        "parent_version", "parent_version__model", "parent_dataset", "parent_dataset__dataset"
    )


# Every model version upstream of one, at any depth. UNION (not UNION ALL) drops a row already
# found, so a cycle in the table ends the recursion instead of looping (PostgreSQL and SQLite).
_ANCESTOR_IDS_SQL = """
WITH RECURSIVE ancestor(id) AS (
    SELECT parent_version_id FROM registry_lineage
        WHERE child_id = %s AND parent_version_id IS NOT NULL
    UNION
    SELECT l.parent_version_id FROM registry_lineage l JOIN ancestor a ON l.child_id = a.id
        WHERE l.parent_version_id IS NOT NULL
)
SELECT id FROM ancestor
"""


def lineage_ancestor_version_ids(version_id: int) -> set[int]:
    """The ids of every model version ``version_id`` derives from, however deep (one
    recursive query, no depth limit, safe against cycles; the version itself only when it
    lies on a cycle)."""
    with connection.cursor() as cursor:
        cursor.execute(_ANCESTOR_IDS_SQL, [version_id])
        return {int(row[0]) for row in cursor.fetchall()}


def lineage_links_upstream(version_id: int) -> list[Lineage]:
    """Every lineage row of the version and of its ancestors, with parents loaded."""
    children = lineage_ancestor_version_ids(version_id) | {version_id}
    return list(
        Lineage.objects.filter(child_id__in=children)
        .select_related("parent_version__model", "parent_dataset__dataset")
        .order_by("pk")
    )


def lineage_children(version: ModelVersion, user: User) -> QuerySet[Lineage]:
    return Lineage.objects.filter(
        parent_version=version, child__in=visible_versions(user)
    ).select_related("child", "child__model")


def visible_datasets(user: User) -> QuerySet[Dataset]:
    return Dataset.objects.select_related("owner").visible_to(user)


def dataset_version_for(dataset_version_id: int, user: User) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.select_related("dataset", "blob")
        .filter(pk=dataset_version_id, dataset__in=visible_datasets(user))
        .first()
    )


# --- listings for the REST API --------------------------------------------------------------

MODEL_ORDERINGS: dict[str, tuple[str, ...]] = {
    "newest": ("-created_at", "-pk"),
    "downloads": ("-download_count", "-created_at", "-pk"),
    "rating": ("-rating_avg", "-rating_count", "-created_at", "-pk"),
}
DATASET_ORDERINGS: dict[str, tuple[str, ...]] = {
    "newest": ("-created_at", "-pk"),
    "name": ("name", "pk"),
}


def _filter_errors(errors: Mapping[str, Any]) -> dict[str, list[str]]:
    return {field: [str(message) for message in messages] for field, messages in errors.items()}


def _invalid_filters(errors: Mapping[str, Any]) -> ApplicationError:
    details = _filter_errors(errors)
    field, messages = next(iter(details.items()))
    return ApplicationError(f"{field}: {messages[0]}", code="invalid_filter", details=details)


def own_models(user: User) -> QuerySet[Model]:
    """Everything the user owns: drafts, private, unlisted and removed models included."""
    if not user.is_authenticated:
        return Model.objects.none()
    return Model.objects.filter(owner_id=user.pk)


def _search_models(qs: QuerySet[Model], q: str) -> QuerySet[Model]:
    return search_models(qs, q)


def _listing_versions(published_only: bool) -> QuerySet[ModelVersion]:
    if published_only:
        return ModelVersion.objects.filter(status=VersionStatus.PUBLISHED).order_by(
            "-published_at", "-pk"
        )
    return ModelVersion.objects.order_by("-created_at", "-pk")


def _cover_image(images: Q) -> Subquery:
    """The first sample image of the newest version the ``images`` filter lets through."""
    cover = (
        SampleImage.objects.filter(version__model=OuterRef("pk"))
        .filter(images)
        .order_by("-version__created_at", "created_at", "pk")
        .values("image")[:1]
    )
    return Subquery(cover)


def _with_listing_data(qs: QuerySet[Model], *, published_only: bool) -> QuerySet[Model]:
    """Owner, tags, versions (``shown_versions``) and a cover image in a constant number of
    queries, whatever the page size: the page, then one query each for tags and versions."""
    images = Q(version__status=VersionStatus.PUBLISHED) if published_only else Q()
    return (
        qs.select_related("owner")
        .annotate(cover_image=_cover_image(images))
        .prefetch_related(
            "tags",
            Prefetch(
                "versions", queryset=_listing_versions(published_only), to_attr="shown_versions"
            ),
        )
    )


def model_list(*, user: User, filters: Mapping[str, Any], mine: bool = False) -> QuerySet[Model]:
    """Listed models (or, with ``mine``, the user's own), filtered, searched and sorted.

    Raises ``ApplicationError`` (``invalid_filter``) for a query string that does not validate.
    """
    from registry.filters import ModelFilter

    base = own_models(user) if mine else _listed_models()
    filterset = ModelFilter(filters, queryset=base, published_only=not mine)
    if not filterset.is_valid():
        raise _invalid_filters(filterset.errors)
    qs = filterset.qs
    q = (filterset.form.cleaned_data.get("q") or "").strip()
    sort = filterset.form.cleaned_data.get("sort") or ""
    if q:
        qs = _search_models(qs, q)
    if sort == "relevance" or (q and not sort):
        from django.db import connection

        ordering: tuple[str, ...] = (
            ("-rank", "-download_count", "-pk")
            if q and connection.vendor == "postgresql"
            else MODEL_ORDERINGS["newest"]
        )
    else:
        ordering = MODEL_ORDERINGS.get(sort, MODEL_ORDERINGS["newest"])
    return _with_listing_data(qs.order_by(*ordering), published_only=not mine)


def _visible_versions_q(user: User) -> Q:
    """Versions of an already visible model that the user may see (as a filter on versions)."""
    if user.is_authenticated and user.is_staff:
        return Q()
    if user.is_authenticated:
        return Q(status=VersionStatus.PUBLISHED) | Q(model__owner_id=user.pk)
    return Q(status=VersionStatus.PUBLISHED)


def model_detail(*, model_id: int, user: User) -> Model | None:
    """A model the user may open, with owner, tags and the versions they may see."""
    versions = ModelVersion.objects.filter(_visible_versions_q(user)).order_by("-created_at", "-pk")
    images = Q(version__in=ModelVersion.objects.filter(_visible_versions_q(user)).values("pk"))
    return (
        visible_models(user)
        .select_related("owner")
        .annotate(cover_image=_cover_image(images))
        .prefetch_related("tags", Prefetch("versions", queryset=versions, to_attr="shown_versions"))
        .filter(pk=model_id)
        .first()
    )


def model_versions(*, model: Model, user: User) -> QuerySet[ModelVersion]:
    """The versions of ``model`` the user may see, newest first, with their files."""
    return (
        ModelVersion.objects.filter(model=model)
        .filter(_visible_versions_q(user))
        .select_related("model", "model__owner")
        .prefetch_related(Prefetch("files", queryset=ModelFile.objects.select_related("blob")))
        .order_by("-created_at", "-pk")
    )


def version_detail(*, version_id: int, user: User) -> ModelVersion | None:
    """A version with files, images and lineage both ways, limited to what the user may see.

    Parents and children the user may not see are left out (``visible_parents`` and
    ``visible_children``).
    """
    parents = Lineage.objects.filter(
        Q(parent_version__in=visible_versions(user).values("pk"))
        | Q(parent_dataset__dataset__in=visible_datasets(user).values("pk"))
    ).select_related(
        "parent_version",
        "parent_version__model",
        "parent_version__model__owner",
        "parent_dataset",
        "parent_dataset__dataset",
        "parent_dataset__dataset__owner",
    )
    children = Lineage.objects.filter(child__in=visible_versions(user).values("pk")).select_related(
        "child", "child__model", "child__model__owner"
    )
    return (
        visible_versions(user)
        .prefetch_related(
            Prefetch("files", queryset=ModelFile.objects.select_related("blob")),
            "images",
            Prefetch("parents", queryset=parents.order_by("pk"), to_attr="visible_parents"),
            Prefetch("children", queryset=children.order_by("pk"), to_attr="visible_children"),
        )
        .filter(pk=version_id)
        .first()
    )


def visible_files_by_hash(*, hash_value: str, user: User) -> QuerySet[ModelFile]:
    """Files matching a hash of any type that sit in versions the user may see."""
    return (
        files_by_hash(hash_value)
        .filter(version__in=visible_versions(user).values("pk"))
        .select_related("version__model__owner")
        .order_by("-version__published_at", "pk")
    )


def listed_datasets(user: User) -> QuerySet[Dataset]:
    """Datasets that appear in browse (``DatasetQuerySet.listed``)."""
    return Dataset.objects.listed()


def _with_dataset_data(qs: QuerySet[Dataset]) -> QuerySet[Dataset]:
    versions = DatasetVersion.objects.select_related("blob").order_by("-created_at", "-pk")
    return qs.select_related("owner").prefetch_related(
        "tags", Prefetch("versions", queryset=versions, to_attr="shown_versions")
    )


def dataset_list(
    *, user: User, filters: Mapping[str, Any], mine: bool = False
) -> QuerySet[Dataset]:
    from registry.filters import DatasetFilter

    base = (
        Dataset.objects.filter(owner_id=user.pk)
        if mine and user.is_authenticated
        else listed_datasets(user)
    )
    filterset = DatasetFilter(filters, queryset=base)
    if not filterset.is_valid():
        raise _invalid_filters(filterset.errors)
    qs = filterset.qs
    q = (filterset.form.cleaned_data.get("q") or "").strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(description__icontains=q))
    sort = filterset.form.cleaned_data.get("sort") or "newest"
    return _with_dataset_data(qs.order_by(*DATASET_ORDERINGS[sort]))


def dataset_detail(*, dataset_id: int, user: User) -> Dataset | None:
    return _with_dataset_data(visible_datasets(user)).filter(pk=dataset_id).first()


PROFILE_LIST_LIMIT = 50


def creator_profile(*, username: str, user: User) -> dict[str, Any] | None:
    """A creator's public page: their listed models and datasets (all of them for themselves)
    and counts. ``None`` when no active user has that name."""
    from django.db.models import Count, Sum

    creator = get_user_model().objects.filter(username__iexact=username, is_active=True).first()
    if creator is None:
        return None
    is_self = user.is_authenticated and user.pk == creator.pk
    models = own_models(user) if is_self else _listed_models().filter(owner=creator)
    datasets = (
        Dataset.objects.filter(owner=creator)
        if is_self
        else listed_datasets(user).filter(owner=creator)
    )
    totals = models.aggregate(count=Count("pk"), downloads=Sum("download_count"))
    published_versions = ModelVersion.objects.filter(
        model__in=models.values("pk"), status=VersionStatus.PUBLISHED
    ).count()
    return {
        "user": creator,
        "models": list(
            _with_listing_data(models.order_by("-created_at", "-pk"), published_only=not is_self)[
                :PROFILE_LIST_LIMIT
            ]
        ),
        "datasets": list(
            _with_dataset_data(datasets.order_by("-created_at", "-pk"))[:PROFILE_LIST_LIMIT]
        ),
        "counts": {
            "models": totals["count"] or 0,
            "datasets": datasets.count(),
            "published_versions": published_versions,
            "downloads": totals["downloads"] or 0,
        },
    }


def dataset_version_detail(*, dataset_version_id: int, user: User) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.select_related("dataset", "dataset__owner", "blob")
        .filter(pk=dataset_version_id, dataset__in=visible_datasets(user).values("pk"))
        .first()
    )
