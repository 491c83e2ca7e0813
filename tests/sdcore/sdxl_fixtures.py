"""Session-scoped tiny SDXL fixtures (import them explicitly).

from tests.sdcore.sdxl_fixtures import tiny_sdxl_model_fixture  # noqa: F401
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcore.tiny import TinyModelPaths
from sdcore.tiny_xl import save_tiny_sdxl_model


@pytest.fixture(scope="session", name="tiny_sdxl_model")
def tiny_sdxl_model_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny SDXL model (seed 0) saved in both layouts, once per session."""
    out_dir: Path = tmp_path_factory.mktemp("tiny-sdxl-model")
    return save_tiny_sdxl_model(out_dir, seed=0)
