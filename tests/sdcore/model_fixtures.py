"""Session-scoped tiny-model fixtures for sdcore tests (import them explicitly).

    from tests.sdcore.model_fixtures import tiny_model_fixture  # noqa: F401

The fixture is registered under the name ``tiny_model``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcore.tiny import TinyModelPaths, save_tiny_model


@pytest.fixture(scope="session", name="tiny_model")
def tiny_model_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny SD 1.x model (seed 0) saved in both layouts, once per session."""
    out_dir: Path = tmp_path_factory.mktemp("tiny-model")
    return save_tiny_model(out_dir, seed=0)
