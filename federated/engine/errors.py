"""Errors the node engine raises, each with a stable ``code`` and a message for people.

Same shape as :class:`sdcore.errors.SdcoreError` (``code``, ``message``, ``details``), so the
ClientApp can report them to the coordinator as ``{"code", "message", "details"}``.
"""

from __future__ import annotations

from sdcore.errors import SdcoreError

__all__ = [
    "AdapterCheckError",
    "AdapterMismatchError",
    "BudgetExceededError",
    "BudgetNotSetError",
    "ConfigError",
    "DatasetError",
    "DatasetNotInJobError",
    "EngineError",
    "FetchError",
    "PrivacyError",
]


class EngineError(SdcoreError):
    """Base class of every error the node engine raises on bad input or a failed check."""

    default_code = "engine_error"


class ConfigError(EngineError):
    """A training configuration is inconsistent (e.g. both a noise multiplier and a target)."""

    default_code = "config_invalid"


class DatasetError(EngineError):
    """The dataset cannot be used at all: missing folder, not a folder, no usable example."""

    default_code = "dataset_invalid"


class DatasetNotInJobError(DatasetError):
    """None of the node's datasets is one the job may train on (its manifest is not listed)."""

    default_code = "dataset_not_in_job"


class FetchError(EngineError):
    """The job's base model could not be downloaded or failed its SHA-256 check."""

    default_code = "model_fetch_failed"


class PrivacyError(EngineError):
    """Base class of privacy-ledger refusals."""

    default_code = "privacy_error"


class BudgetNotSetError(PrivacyError):
    """The owner has set no privacy budget for this dataset, so nothing may train on it."""

    default_code = "privacy_budget_not_set"


class BudgetExceededError(PrivacyError):
    """The call would take the dataset past its privacy budget; nothing was trained."""

    default_code = "privacy_budget_exceeded"


class AdapterMismatchError(EngineError):
    """Adapter arrays do not match the model's LoRA layers (names, shapes or mode)."""

    default_code = "adapter_mismatch"


class AdapterCheckError(EngineError):
    """After training the adapter is not finite or did not change (opacus issue 820)."""

    default_code = "adapter_check_failed"
