"""What a trainer asks for (:class:`JobSpec`), and every check it must pass before launch.

The checks are collected, not stopped at the first: the wizard and the estimate show them
all; :func:`job_spec_resolve` raises the first with the others in its details.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User

from core.errors import AccessDeniedError, ApplicationError, NotFoundError
from federated.models import TRAINABLE_FAMILIES, DatasetTerms, TrainingUse
from federated.selectors import Budget, dataset_budgets
from marketplace.selectors import effective_permissions
from registry.access import can_view_dataset, can_view_version, download_decision
from registry.models import (
    BaseModelFamily,
    DatasetKind,
    DatasetVersion,
    FileFormat,
    FileLayout,
    ModelFile,
    ModelKind,
    ModelVersion,
)

ADAPTER_MODES = ("ffa", "lora")
AGGREGATIONS = ("fedavg", "secagg")


@dataclass(frozen=True)
class AggregationCost:
    """What an aggregation costs over plain FedAvg, as measured (``source``)."""

    aggregation: str
    label: str
    extra_seconds_per_round: float  # fixed cost added to each round
    wall_time_factor: float  # whole run, against FedAvg, same settings
    bytes_factor: float  # bytes a node sends per round, against FedAvg (named arrays)
    what_it_adds: str
    limits: str
    source: str

    def extra_seconds(self, rounds: int) -> float:
        return self.extra_seconds_per_round * max(0, rounds)


# Measured on 2 CPU cores, 2 nodes, 3 rounds, rank 1 (bench/RESULTS-federation.md, section 1):
# FedAvg 106.3 s (rounds 30-33 s, 17-20 s fixed), SecAgg+ 151.1 s (rounds 46-47 s, 44-45 s
# fixed); bytes a node sends per round 39,971 (FedAvg, named) against 26,586 (SecAgg+).
AGGREGATION_COSTS: dict[str, AggregationCost] = {
    "fedavg": AggregationCost(
        aggregation="fedavg",
        label="FedAvg",
        extra_seconds_per_round=0.0,
        wall_time_factor=1.0,
        bytes_factor=1.0,
        what_it_adds="The server sees each node's update and checks it before averaging; a "
        "reply whose dataset its node does not serve is left out of the average.",
        limits="",
        source="",
    ),
    "secagg": AggregationCost(
        aggregation="secagg",
        label="Secure aggregation (SecAgg+)",
        extra_seconds_per_round=25.0,
        wall_time_factor=1.42,
        bytes_factor=0.67,
        what_it_adds="The server (and the SuperLink operator) sees only the sum of the nodes' "
        "updates, never one node's.",
        limits="Each round is four message exchanges instead of one; a node that refuses a "
        "round (its privacy budget) or names a dataset it does not serve fails the "
        "round: a masked sum cannot leave one node out. Per-node metrics stay visible.",
        source="bench/RESULTS-federation.md (2 CPU cores, 2 nodes, 3 rounds, rank 1): "
        "151 s against 106 s, 44-45 s of fixed cost per round against 17-20 s.",
    ),
}
MAX_DATASETS = 20
LIMITS: dict[str, tuple[float, float]] = {
    "rounds": (1, 100),
    "local_steps": (1, 10_000),
    "rank": (1, 128),
    "batch_size": (1, 256),
    "resolution": (8, 2048),
    "timeout_minutes": (5, 7 * 24 * 60),
    "seed": (0, 2**31 - 1),
}


# Bases whose text encoder the trainer can put a LoRA on (adapter.py).
TEXT_ENCODER_LORA_FAMILIES = (BaseModelFamily.SD1, BaseModelFamily.SD2)


@dataclass(frozen=True)
class JobSpec:
    """A job request: base model version, datasets, LoRA settings, rounds and privacy."""

    name: str
    base_version_id: int
    dataset_version_ids: tuple[int, ...]
    use: str
    commercial_use: bool = False
    trigger_word: str = ""
    rounds: int = 3
    local_steps: int = 10
    rank: int = 4
    alpha: float | None = None  # None: the rank
    learning_rate: float = 1e-3
    resolution: int = 512
    batch_size: int = 4
    adapter_mode: str = "ffa"
    buckets: bool = True  # aspect-ratio buckets (False: centre-cropped squares)
    text_encoder_lora: bool = False  # LoRA on the text encoder's attention too
    aggregation: str = "fedavg"
    seed: int = 0
    dp: bool = True
    target_epsilon: float | None = None  # None: the most every dataset allows
    delta: float | None = None  # None: the smallest delta of the datasets
    max_grad_norm: float = 0.05
    min_nodes: int | None = None  # None: every dataset's node
    timeout_minutes: int = 24 * 60

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dataset_version_ids"] = list(self.dataset_version_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["dataset_version_ids"] = tuple(values.get("dataset_version_ids", ()))
        return cls(**values)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical request: the same body gives the same fingerprint."""
        raw = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    clause: str = ""
    dataset_version_id: int | None = None
    dataset: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.clause:
            out["clause"] = self.clause
        if self.dataset_version_id is not None:
            out["dataset_version_id"] = self.dataset_version_id
            out["dataset"] = self.dataset
        return out


@dataclass
class ResolvedSpec:
    """The spec with its objects loaded, the defaults filled in, and what is wrong with it."""

    spec: JobSpec
    base_version: ModelVersion
    base_file: ModelFile | None
    terms: list[DatasetTerms]
    budgets: dict[int, Budget]
    config: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    def raise_first(self) -> None:
        if not self.problems:
            return
        first = self.problems[0]
        details = first.as_dict()
        details.pop("message")
        details["problems"] = [p.as_dict() for p in self.problems]
        raise ApplicationError(first.message, code=first.code, details=details)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range(config: dict[str, Any], problems: list[Problem], key: str) -> None:
    low, high = LIMITS[key]
    value = config[key]
    if not _is_int(value) or not low <= value <= high:
        problems.append(
            Problem(
                f"bad_{key}", f"{key} must be a whole number from {low:g} to {high:g}.", clause=key
            )
        )


def _positive(config: dict[str, Any], problems: list[Problem], key: str, high: float) -> None:
    value = config[key]
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and 0 < float(value) <= high
    )
    if not ok:
        problems.append(
            Problem(f"bad_{key}", f"{key} must be more than 0 and at most {high:g}.", clause=key)
        )


def _hyperparameters(spec: JobSpec, problems: list[Problem]) -> dict[str, Any]:
    config = spec.as_dict()
    config["alpha"] = float(spec.rank) if spec.alpha is None else spec.alpha
    for key in LIMITS:
        _range(config, problems, key)
    if _is_int(spec.resolution) and spec.resolution % 8:
        problems.append(
            Problem("bad_resolution", "resolution must be a multiple of 8.", clause="resolution")
        )
    _positive(config, problems, "learning_rate", 10.0)
    if spec.alpha is not None:
        _positive(config, problems, "alpha", 1024.0)
    _positive(config, problems, "max_grad_norm", 1000.0)
    if spec.adapter_mode not in ADAPTER_MODES:
        problems.append(
            Problem(
                "bad_adapter_mode",
                f"adapter_mode is one of {ADAPTER_MODES}.",
                clause="adapter_mode",
            )
        )
    if spec.aggregation not in AGGREGATIONS:
        problems.append(
            Problem(
                "bad_aggregation", f"aggregation is one of {AGGREGATIONS}.", clause="aggregation"
            )
        )
    if spec.use not in TrainingUse.values:
        problems.append(
            Problem("bad_use", f"use is one of: {', '.join(TrainingUse.values)}.", clause="use")
        )
    if not spec.name.strip():
        problems.append(Problem("name_required", "A job needs a name.", clause="name"))
    if len(spec.trigger_word) > 100 or "," in spec.trigger_word:
        problems.append(
            Problem(
                "bad_trigger_word",
                "The trigger word has at most 100 characters and no comma.",
                clause="trigger_word",
            )
        )
    return config


def _base_problems(
    trainer: User, spec: JobSpec, problems: list[Problem]
) -> tuple[ModelVersion, ModelFile | None]:
    base = ModelVersion.objects.select_related("model").filter(pk=spec.base_version_id).first()
    if base is None or not can_view_version(trainer, base):
        raise NotFoundError("No such base model version.", code="base_not_found")
    decision = download_decision(trainer, base)
    if not decision.allowed:
        raise AccessDeniedError(
            f"You may not use this base model: {decision.message}",
            code="base_not_entitled",
            details={"base_version_id": base.pk, "reason": decision.code, **decision.details},
        )
    primary = base.files.select_related("blob").filter(is_primary=True).first()
    if base.model.kind != ModelKind.CHECKPOINT:
        problems.append(
            Problem(
                "base_not_checkpoint",
                "The base model must be a Stable Diffusion checkpoint.",
                clause="base_version",
            )
        )
    elif (
        base.layout != FileLayout.SINGLE_FILE
        or primary is None
        or primary.format != FileFormat.SAFETENSORS
    ):
        problems.append(
            Problem(
                "base_not_single_file",
                "The base version must be one single-file .safetensors "
                "checkpoint (nodes download that file).",
                clause="base_version",
            )
        )
    if base.base_model not in TRAINABLE_FAMILIES:
        problems.append(
            Problem(
                "family_not_trainable",
                f"Federated LoRA training supports {', '.join(TRAINABLE_FAMILIES)} base models, "
                f"not {base.base_model}.",
                clause="base_model_family",
            )
        )
    if spec.text_encoder_lora and base.base_model not in TEXT_ENCODER_LORA_FAMILIES:
        problems.append(
            Problem(
                "text_encoder_lora_family",
                "Text-encoder LoRA is supported on SD 1.x and SD 2.x bases, "
                f"not {base.base_model} yet.",
                clause="text_encoder_lora",
            )
        )
    permissions = effective_permissions(base)
    if not permissions.derivatives_allowed.value:
        problems.append(
            Problem(
                "base_license_forbids_derivatives",
                f"The base model's license ({'; '.join(permissions.derivatives_allowed.sources)}) "
                "does not allow training derivatives.",
                clause="derivatives_allowed",
            )
        )
    if spec.commercial_use and permissions.commercial_use.value == "none":
        problems.append(
            Problem(
                "base_license_forbids_commercial_use",
                "The base model's license allows no commercial use of derivatives.",
                clause="commercial_use",
            )
        )
    return base, primary


def _dataset_terms(trainer: User, spec: JobSpec) -> list[DatasetTerms]:
    ids = list(spec.dataset_version_ids)
    if not ids or len(ids) > MAX_DATASETS:
        raise ApplicationError(f"Pick 1 to {MAX_DATASETS} datasets.", code="bad_datasets")
    if len(set(ids)) != len(ids):
        raise ApplicationError("A dataset is listed twice.", code="duplicate_dataset")
    found = {
        t.dataset_version_id: t
        for t in DatasetTerms.objects.select_related("dataset_version__dataset", "node")
        .filter(dataset_version_id__in=ids)
        .order_by("pk")
    }
    terms: list[DatasetTerms] = []
    for dv_id in ids:
        item = found.get(dv_id)
        if item is None:
            version = DatasetVersion.objects.select_related("dataset").filter(pk=dv_id).first()
            if version is None or not can_view_dataset(trainer, version.dataset):
                raise NotFoundError(
                    f"No such dataset version {dv_id}.",
                    code="dataset_not_found",
                    details={"dataset_version_id": dv_id},
                )
            raise ApplicationError(
                f"Dataset {version.dataset.name!r} is not a private dataset listed from a node.",
                code="dataset_not_federated",
                details={"dataset_version_id": dv_id, "dataset": version.dataset.name},
            )
        if not can_view_dataset(trainer, item.dataset_version.dataset) or (
            item.dataset_version.dataset.is_removed
        ):
            raise NotFoundError(
                f"No such dataset version {dv_id}.",
                code="dataset_not_found",
                details={"dataset_version_id": dv_id},
            )
        terms.append(item)
    return terms


def _dataset_problems(
    spec: JobSpec,
    base: ModelVersion,
    terms: list[DatasetTerms],
    budgets: dict[int, Budget],
    config: dict[str, Any],
    problems: list[Problem],
) -> None:
    hashes: set[str] = set()
    for t in terms:
        version = t.dataset_version
        name = version.dataset.name

        def add(code: str, message: str, clause: str, _v: Any = version, _n: str = name) -> None:
            problems.append(
                Problem(
                    code,
                    f"Dataset {_n!r} (version {_v.pk}): {message}",
                    clause=clause,
                    dataset_version_id=_v.pk,
                    dataset=_n,
                )
            )

        if version.dataset.kind != DatasetKind.PRIVATE:
            add("dataset_not_private", "only private datasets are trained on federatedly.", "kind")
        if t.node.revoked_at is not None:
            add("dataset_node_revoked", "the node serving it was revoked.", "node")
        if version.manifest_hash in hashes:
            add(
                "duplicate_manifest",
                "another dataset in the job has the same manifest.",
                "manifest_hash",
            )
        hashes.add(version.manifest_hash)
        if base.base_model not in t.allowed_families:
            add(
                "terms_forbid_family",
                f"its terms allow base models of families {', '.join(t.allowed_families)}, "
                f"not {base.base_model}.",
                "allowed_families",
            )
        if spec.use not in t.allowed_uses:
            add(
                "terms_forbid_use",
                f"its terms allow the uses {', '.join(t.allowed_uses)}, not {spec.use}.",
                "allowed_uses",
            )
        if spec.commercial_use and not t.commercial_use:
            add(
                "terms_forbid_commercial_use",
                "its terms do not allow commercial use of trained models.",
                "commercial_use",
            )
        if not spec.dp:
            if t.require_dp:
                add(
                    "terms_require_dp",
                    "its terms require differential privacy (DP-SGD).",
                    "require_dp",
                )
            continue
        budget = budgets[version.pk]
        target = config["target_epsilon"]
        if target is None:
            continue
        if target > t.epsilon_per_job + 1e-12:
            add(
                "epsilon_above_job_budget",
                f"the target epsilon {target:g} is above its per-job budget {t.epsilon_per_job:g}.",
                "epsilon_per_job",
            )
        elif target > budget.remaining + 1e-12:
            add(
                "epsilon_above_remaining_budget",
                f"the target epsilon {target:g} is above its remaining lifetime budget "
                f"{budget.remaining:g} (spent {budget.spent:g}, reserved by running jobs "
                f"{budget.reserved:g}, lifetime {t.epsilon_lifetime:g}).",
                "epsilon_lifetime",
            )
        if config["delta"] is not None and config["delta"] > t.delta * (1 + 1e-9):
            add(
                "delta_above_terms",
                f"the target delta {config['delta']:g} is above its delta {t.delta:g}.",
                "delta",
            )


def _privacy_defaults(
    spec: JobSpec,
    terms: list[DatasetTerms],
    budgets: dict[int, Budget],
    config: dict[str, Any],
    problems: list[Problem],
) -> None:
    if not spec.dp:
        config["target_epsilon"] = None
        config["delta"] = None
        return
    if spec.target_epsilon is None:
        allowed = [min(t.epsilon_per_job, budgets[t.dataset_version_id].remaining) for t in terms]
        config["target_epsilon"] = min(allowed) if allowed else None
        for t, value in zip(terms, allowed, strict=True):
            if value <= 0:
                name = t.dataset_version.dataset.name
                problems.append(
                    Problem(
                        "privacy_budget_exhausted",
                        f"Dataset {name!r} (version {t.dataset_version_id}) has no privacy budget "
                        "left.",
                        clause="epsilon_lifetime",
                        dataset_version_id=t.dataset_version_id,
                        dataset=name,
                    )
                )
                config["target_epsilon"] = None
    else:
        _positive(config, problems, "target_epsilon", 1000.0)
        if problems and problems[-1].code == "bad_target_epsilon":
            config["target_epsilon"] = None
    if spec.delta is None:
        config["delta"] = min((t.delta for t in terms), default=1e-5)
    else:
        value = spec.delta
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            problems.append(Problem("bad_delta", "delta must be between 0 and 1.", clause="delta"))
            config["delta"] = None


def job_spec_resolve(
    *, trainer: User, spec: JobSpec, exclude_job_id: int | None = None
) -> ResolvedSpec:
    """Load the spec's base version and datasets (404/403 when the trainer may not see or use
    them) and list every problem; the caller raises (:meth:`ResolvedSpec.raise_first`)."""
    problems: list[Problem] = []
    config = _hyperparameters(spec, problems)
    base, primary = _base_problems(trainer, spec, problems)
    terms = _dataset_terms(trainer, spec)
    budgets = dataset_budgets(terms, exclude_job_id=exclude_job_id)
    _privacy_defaults(spec, terms, budgets, config, problems)
    min_nodes = len(terms) if spec.min_nodes is None else spec.min_nodes
    if not _is_int(min_nodes) or not 1 <= min_nodes <= len(terms):
        problems.append(
            Problem(
                "bad_min_nodes",
                f"min_nodes must be from 1 to the number of datasets ({len(terms)}).",
                clause="min_nodes",
            )
        )
    config["min_nodes"] = min_nodes
    _dataset_problems(spec, base, terms, budgets, config, problems)
    return ResolvedSpec(spec, base, primary, terms, budgets, config, problems)
