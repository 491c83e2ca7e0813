"""Forms of the federated pages; they parse input into a :class:`JobSpec`, the services
decide (every check of a job is in ``federated.services.job_spec``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms

from core.errors import ApplicationError
from federated.models import TRAINABLE_FAMILIES, ApprovalMode, DatasetTerms, TrainingUse
from federated.services.job_spec import AGGREGATION_COSTS, JobSpec
from marketplace.templatetags.labels import base_model_label
from registry.models import ModelVersion

_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(JobSpec) if f.default is not dataclasses.MISSING
}

# Which field of the wizard a problem or an error of the services belongs to (by its code or
# its clause); a problem that names a dataset goes next to that dataset.
_CLAUSE_FIELDS = {
    "base_version": "base_version",
    "base_model_family": "base_version",
    "derivatives_allowed": "base_version",
}
_CODE_FIELDS = {
    "base_not_found": "base_version",
    "base_not_entitled": "base_version",
    "bad_datasets": "datasets",
    "duplicate_dataset": "datasets",
    "dataset_not_found": "datasets",
    "dataset_not_federated": "datasets",
    "idempotency_key_required": None,
    "idempotency_key_reused": None,
}


@dataclass(frozen=True)
class DatasetOption:
    """A dataset checkbox of the wizard, with the problems the services found with it."""

    terms: DatasetTerms
    checked: bool
    problems: list[str]


class JobForm(forms.Form):
    """The job wizard: every :class:`JobSpec` field a trainer sets, on one page."""

    name = forms.CharField(max_length=200, label="Job name")
    base_version = forms.TypedChoiceField(
        coerce=int,
        label="Base model version",
        help_text="A Stable Diffusion checkpoint whose license allows derivatives.",
    )
    datasets = forms.TypedMultipleChoiceField(
        coerce=int, required=False, widget=forms.CheckboxSelectMultiple, label="Private datasets"
    )
    use = forms.ChoiceField(choices=TrainingUse.choices, label="What the LoRA is for")
    commercial_use = forms.BooleanField(required=False, label="Commercial use of the LoRA")
    trigger_word = forms.CharField(max_length=100, required=False, label="Trigger word")
    rank = forms.IntegerField(label="LoRA rank")
    alpha = forms.FloatField(
        required=False, label="LoRA alpha", help_text="Empty: the same as the rank."
    )
    local_steps = forms.IntegerField(label="Local steps per round")
    learning_rate = forms.FloatField(label="Learning rate")
    resolution = forms.IntegerField(label="Resolution (px)", help_text="A multiple of 8.")
    batch_size = forms.IntegerField(label="Batch size")
    rounds = forms.IntegerField(label="Rounds")
    dp = forms.BooleanField(required=False, label="Differential privacy (DP-SGD)")
    target_epsilon = forms.FloatField(
        required=False, label="Target epsilon", help_text="Empty: the most every dataset allows."
    )
    delta = forms.FloatField(
        required=False, label="Delta", help_text="Empty: the smallest delta of the datasets."
    )
    max_grad_norm = forms.FloatField(label="Max gradient norm (clipping)")
    aggregation = forms.ChoiceField(
        choices=[(key, cost.label) for key, cost in AGGREGATION_COSTS.items()],
        label="Aggregation",
        widget=forms.RadioSelect,
        required=False,
        help_text="Secure aggregation: the server sees only the sum of the nodes' updates, "
        "at a cost in time shown in the estimate.",
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200)

    LORA_FIELDS = (
        "rank",
        "alpha",
        "local_steps",
        "learning_rate",
        "resolution",
        "batch_size",
        "rounds",
    )
    PRIVACY_FIELDS = ("dp", "target_epsilon", "delta", "max_grad_norm", "aggregation")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        base_versions: Iterable[ModelVersion],
        dataset_terms: Iterable[DatasetTerms],
        initial: Mapping[str, object] | None = None,
    ) -> None:
        values = {
            key: _DEFAULTS[key]
            for key in (*self.LORA_FIELDS, *self.PRIVACY_FIELDS)
            if key in _DEFAULTS
        }
        values.update(use=_DEFAULTS.get("use", TrainingUse.STYLE), **(initial or {}))
        super().__init__(data, initial=values)
        self.dataset_terms = list(dataset_terms)
        self.fields["base_version"].choices = [  # type: ignore[attr-defined]
            ("", "Choose a base model"),
            *(
                (v.pk, f"{v.model.name} · {v.name} ({base_model_label(v.base_model)})")
                for v in base_versions
            ),
        ]
        self.fields["datasets"].choices = [  # type: ignore[attr-defined]
            (t.dataset_version_id, t.dataset_version.dataset.name) for t in self.dataset_terms
        ]
        self.dataset_problems: dict[int, list[str]] = {}

    def spec(self) -> JobSpec:
        """The request, from a valid form."""
        data = self.cleaned_data
        return JobSpec(
            name=data["name"],
            base_version_id=data["base_version"],
            dataset_version_ids=tuple(data["datasets"]),
            use=data["use"],
            commercial_use=data["commercial_use"],
            trigger_word=data["trigger_word"],
            rounds=data["rounds"],
            local_steps=data["local_steps"],
            rank=data["rank"],
            alpha=data["alpha"],
            learning_rate=data["learning_rate"],
            resolution=data["resolution"],
            batch_size=data["batch_size"],
            dp=data["dp"],
            target_epsilon=data["target_epsilon"] if data["dp"] else None,
            delta=data["delta"] if data["dp"] else None,
            max_grad_norm=data["max_grad_norm"],
            aggregation=data["aggregation"] or "fedavg",
        )

    # --- what the services said, next to the field or dataset it concerns -------------------

    def add_problems(self, problems: Iterable[Mapping[str, Any]]) -> None:
        """Put each problem (``Problem.as_dict()``) next to its dataset or its field."""
        for problem in problems:
            dataset_id = problem.get("dataset_version_id")
            message = str(problem.get("message", ""))
            if dataset_id is not None and int(dataset_id) in self._offered:
                self.dataset_problems.setdefault(int(dataset_id), []).append(message)
            elif dataset_id is not None:
                self.add_error("datasets", message)
            else:
                self.add_error(self._field_for(problem), message)

    @property
    def has_problems(self) -> bool:
        return bool(self.errors or self.dataset_problems)

    def add_application_error(self, err: ApplicationError) -> None:
        problems = err.details.get("problems")
        if isinstance(problems, list) and problems:
            self.add_problems(problems)
            return
        dataset_id = err.details.get("dataset_version_id")
        if dataset_id is not None and int(dataset_id) in self._offered:
            self.dataset_problems.setdefault(int(dataset_id), []).append(err.message)
        else:
            self.add_error(self._field_for({"code": err.code}), err.message)

    @property
    def _offered(self) -> set[int]:
        return {t.dataset_version_id for t in self.dataset_terms}

    def _field_for(self, problem: Mapping[str, Any]) -> str | None:
        code = str(problem.get("code", ""))
        if code in _CODE_FIELDS:
            return _CODE_FIELDS[code]
        clause = str(problem.get("clause", ""))
        if clause in _CLAUSE_FIELDS:
            return _CLAUSE_FIELDS[clause]
        return clause if clause in self.fields else None

    def dataset_options(self) -> list[DatasetOption]:
        raw = self["datasets"].value() or []
        picked = {str(v) for v in (raw if isinstance(raw, list | tuple) else [raw])}
        return [
            DatasetOption(
                t,
                str(t.dataset_version_id) in picked,
                self.dataset_problems.get(t.dataset_version_id, []),
            )
            for t in self.dataset_terms
        ]


class RejectForm(forms.Form):
    note = forms.CharField(
        max_length=500,
        required=False,
        label="Note to the trainer",
        widget=forms.TextInput(attrs={"placeholder": "Optional"}),
    )


class PreviewForm(forms.Form):
    """One preview image for a private dataset (the service checks and cleans it)."""

    image = forms.FileField(
        label="Preview image",
        help_text=(
            "PNG, JPEG or WebP. Stored as a PNG at most 512 px a side, without its metadata."
        ),
    )
    caption = forms.CharField(max_length=500, required=False, label="Caption")


class TermsForm(forms.Form):
    """A private dataset's terms, edited by its owner on the dataset's page; the service
    (``dataset_terms_update``) checks them, as it does for the API and the CLI."""

    PRICING_CHOICES = (("example_round", "Per example and round"), ("job", "Per job"))

    pricing = forms.ChoiceField(choices=PRICING_CHOICES, widget=forms.RadioSelect, label="Price")
    price = forms.IntegerField(min_value=0, label="Credits", help_text="0: free.")
    allowed_families = forms.MultipleChoiceField(
        choices=[(f.value, f.label) for f in TRAINABLE_FAMILIES],
        widget=forms.CheckboxSelectMultiple,
        label="Base models",
    )
    allowed_uses = forms.MultipleChoiceField(
        choices=TrainingUse.choices, widget=forms.CheckboxSelectMultiple, label="Uses"
    )
    commercial_use = forms.BooleanField(
        required=False, label="LoRAs trained on it may be used commercially"
    )
    approval = forms.ChoiceField(choices=ApprovalMode.choices, label="Approval")
    require_dp = forms.BooleanField(required=False, label="Require differential privacy")
    epsilon_per_job = forms.FloatField(label="Epsilon per job")
    delta = forms.FloatField(label="Delta")
    epsilon_lifetime = forms.FloatField(label="Lifetime epsilon", help_text="Over all jobs.")

    @classmethod
    def initial_from(cls, terms: DatasetTerms) -> dict[str, Any]:
        return {
            "pricing": terms.pricing,
            "price": terms.price_per_job
            if terms.pricing == "job"
            else terms.price_per_example_round,
            "allowed_families": terms.allowed_families,
            "allowed_uses": terms.allowed_uses,
            "commercial_use": terms.commercial_use,
            "approval": terms.approval,
            "require_dp": terms.require_dp,
            "epsilon_per_job": terms.epsilon_per_job,
            "delta": terms.delta,
            "epsilon_lifetime": terms.epsilon_lifetime,
        }

    def changes(self) -> dict[str, Any]:
        """The service's ``changes`` (call after ``is_valid``)."""
        data = self.cleaned_data
        per_job = data["pricing"] == "job"
        return {
            "price_per_job": data["price"] if per_job else 0,
            "price_per_example_round": 0 if per_job else data["price"],
            "allowed_families": list(data["allowed_families"]),
            "allowed_uses": list(data["allowed_uses"]),
            "commercial_use": data["commercial_use"],
            "approval": data["approval"],
            "require_dp": data["require_dp"],
            "epsilon_per_job": data["epsilon_per_job"],
            "delta": data["delta"],
            "epsilon_lifetime": data["epsilon_lifetime"],
        }

    def add_application_error(self, err: ApplicationError) -> None:
        """Put a service's refusal next to the field it names (``field: message``)."""
        field = str(err.details.get("field", ""))
        message = err.message
        if field and message.startswith(f"{field}: "):
            message = message[len(field) + 2 :]
        if field in ("price_per_job", "price_per_example_round"):
            field = "price"
        self.add_error(field if field in self.fields else None, message[:1].upper() + message[1:])
