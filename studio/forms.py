"""The generation form: a checkpoint, a prompt, the settings, and a few LoRA and embedding
slots, each with a weight. Rules live in the service; errors it raises are put back next to
the field they name (``details["field"]``)."""

from __future__ import annotations

from typing import Any

from django import forms

from core.errors import ApplicationError
from registry.models import BaseModelFamily, ModelVersion
from sdcore.generate import SAMPLERS
from studio.limits import MAX_PROMPT_CHARS
from studio.models import Generation
from studio.selectors import FormChoices, embeddings_of, loras_of
from studio.services.defaults import NativeSettings
from studio.services.generations import ResourceInput, embedding_word

LORA_SLOTS = 3
EMBEDDING_SLOTS = 2


class FamilySelect(forms.Select):
    """A select whose options carry ``data-family`` (the base-model family of the version),
    so the page can grey out LoRAs and embeddings that do not fit the chosen checkpoint."""

    def __init__(
        self,
        families: dict[str, str],
        attrs: dict[str, Any] | None = None,
        option_attrs: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__(attrs)
        self.families = families
        self.option_attrs = option_attrs or {}

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        family = self.families.get(str(value))
        if family:
            option["attrs"]["data-family"] = family
        option["attrs"].update(self.option_attrs.get(str(value), {}))
        return option


def native_attrs(natives: dict[int, NativeSettings]) -> dict[str, dict[str, str]]:
    """``data-width``, ``data-height``, ``data-steps`` of each checkpoint option: the page
    puts them in the fields when the checkpoint changes."""
    return {
        str(pk): {
            "data-width": str(n.width),
            "data-height": str(n.height),
            "data-steps": str(n.steps),
        }
        for pk, n in natives.items()
    }


def version_label(version: ModelVersion, *, word: bool = False) -> str:
    """``Castles v1 (SD 1.x)``; a draft says so; an embedding shows its prompt word."""
    family = BaseModelFamily(version.base_model).label if version.base_model else "?"
    draft = "" if version.is_published else f" · {version.get_status_display().lower()}"
    label = f"{version.model.name} {version.name} ({family}){draft}"
    if word:
        files = sorted(version.files.all(), key=lambda f: (not f.is_primary, f.path))
        if files:
            label += f" · word: {embedding_word(version, files[0].path)}"
    return label


def _select(
    versions: list[ModelVersion],
    *,
    empty: str | None,
    label: str,
    required: bool,
    words: bool = False,
    option_attrs: dict[str, dict[str, str]] | None = None,
) -> forms.TypedChoiceField:
    choices: list[tuple[Any, str]] = [("", empty)] if empty is not None else []
    choices += [(v.pk, version_label(v, word=words)) for v in versions]
    families = {str(v.pk): v.base_model for v in versions}
    return forms.TypedChoiceField(
        choices=choices,
        coerce=int,
        empty_value=None,
        required=required,
        label=label,
        widget=FamilySelect(
            families,
            attrs={"data-resource": "1"} if empty is not None else None,
            option_attrs=option_attrs,
        ),
    )


def _weight(label: str) -> forms.FloatField:
    return forms.FloatField(
        initial=1.0, required=False, label=label, widget=forms.NumberInput(attrs={"step": "0.05"})
    )


class GenerationForm(forms.Form):
    base_version = forms.TypedChoiceField(coerce=int, label="Checkpoint")
    prompt = forms.CharField(max_length=MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    negative_prompt = forms.CharField(
        required=False, max_length=MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 2})
    )
    seed = forms.IntegerField(
        initial=-1, required=False, help_text="-1 or empty picks a random seed."
    )
    steps = forms.IntegerField(initial=20)
    guidance = forms.FloatField(
        initial=7.0, label="CFG scale", widget=forms.NumberInput(attrs={"step": "0.5"})
    )
    width = forms.IntegerField(initial=512, widget=forms.NumberInput(attrs={"step": "8"}))
    height = forms.IntegerField(initial=512, widget=forms.NumberInput(attrs={"step": "8"}))
    sampler = forms.ChoiceField(choices=[(s, s) for s in SAMPLERS], initial="Euler")
    compare = forms.BooleanField(
        required=False,
        label="Also show the checkpoint alone (same seed), beside the image with the LoRAs",
    )

    def __init__(
        self,
        *args: Any,
        choices: FormChoices,
        natives: dict[int, NativeSettings] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.natives = natives or {}
        self.fields["base_version"] = _select(
            choices.checkpoints,
            empty=None,
            label="Checkpoint",
            required=True,
            option_attrs=native_attrs(self.natives),
        )
        chosen = self.initial.get("base_version")
        if chosen is None and choices.checkpoints:
            chosen = choices.checkpoints[0].pk
        native = self.natives.get(chosen) if isinstance(chosen, int) else None
        if native is not None:  # the checkpoint's own size and steps, unless set already
            for name, value in (
                ("width", native.width),
                ("height", native.height),
                ("steps", native.steps),
            ):
                self.initial.setdefault(name, value)
        self.native = native
        for slot in range(1, LORA_SLOTS + 1):
            self.fields[f"lora_{slot}"] = _select(
                choices.loras, empty="—", label=f"LoRA {slot}", required=False
            )
            self.fields[f"lora_{slot}_weight"] = _weight("Weight")
        for slot in range(1, EMBEDDING_SLOTS + 1):
            self.fields[f"embedding_{slot}"] = _select(
                choices.embeddings,
                empty="—",
                label=f"Embedding {slot}",
                required=False,
                words=True,
            )
            self.fields[f"embedding_{slot}_weight"] = _weight("Weight")
        self._slots: dict[str, list[int]] = {"loras": [], "embeddings": []}

    def slot_fields(self, kind: str) -> list[tuple[forms.BoundField, forms.BoundField]]:
        count = LORA_SLOTS if kind == "lora" else EMBEDDING_SLOTS
        return [(self[f"{kind}_{n}"], self[f"{kind}_{n}_weight"]) for n in range(1, count + 1)]

    def _resources(self, kind: str, key: str, count: int) -> list[ResourceInput]:
        items: list[ResourceInput] = []
        for slot in range(1, count + 1):
            version_id = self.cleaned_data.get(f"{kind}_{slot}")
            if version_id is None:
                continue
            weight = self.cleaned_data.get(f"{kind}_{slot}_weight")
            items.append(ResourceInput(version_id, 1.0 if weight is None else weight))
            self._slots[key].append(slot)
        return items

    def service_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``generation_create`` (call after ``is_valid``)."""
        data = self.cleaned_data
        return {
            "base_version_id": data["base_version"],
            "prompt": data["prompt"],
            "negative_prompt": data.get("negative_prompt") or "",
            "seed": data.get("seed"),
            "steps": data["steps"],
            "guidance": data["guidance"],
            "width": data["width"],
            "height": data["height"],
            "sampler": data["sampler"],
            "loras": self._resources("lora", "loras", LORA_SLOTS),
            "embeddings": self._resources("embedding", "embeddings", EMBEDDING_SLOTS),
            "compare": bool(data.get("compare")),
        }

    def _form_field(self, api_field: str) -> str | None:
        """``loras[1].weight`` -> ``lora_3_weight`` (the slot it came from), and so on."""
        if api_field == "base_version_id":
            return "base_version"
        for key, kind in (("loras", "lora"), ("embeddings", "embedding")):
            if api_field == key:
                return f"{kind}_1"
            if api_field.startswith(f"{key}["):
                index = int(api_field[len(key) + 1 : api_field.index("]")])
                slots = self._slots[key]
                slot = slots[index] if index < len(slots) else 1
                suffix = "_weight" if api_field.endswith(".weight") else ""
                return f"{kind}_{slot}{suffix}"
        return api_field if api_field in self.fields else None

    def add_service_error(self, err: ApplicationError) -> None:
        """Put a service's refusal next to the field it names (else at the top)."""
        api_field = str(err.details.get("field", ""))
        field = self._form_field(api_field) if api_field else None
        message = err.message
        if api_field and message.startswith(f"{api_field}: "):
            message = message[len(api_field) + 2 :]
        self.add_error(field, message[:1].upper() + message[1:])


def initial_from_generation(generation: Generation) -> dict[str, Any]:
    """The form's values to make ``generation`` again (same seed: same image)."""
    initial: dict[str, Any] = {
        "base_version": generation.base_version_id,
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "seed": generation.seed,
        "steps": generation.steps,
        "guidance": generation.guidance,
        "width": generation.width,
        "height": generation.height,
        "sampler": generation.sampler,
    }
    for kind, resources, count in (
        ("lora", loras_of(generation), LORA_SLOTS),
        ("embedding", embeddings_of(generation), EMBEDDING_SLOTS),
    ):
        for slot, res in enumerate(resources[:count], start=1):
            initial[f"{kind}_{slot}"] = res.version_id
            initial[f"{kind}_{slot}_weight"] = res.weight
    return initial
