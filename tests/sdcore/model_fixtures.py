"""Session-scoped model fixtures for sdcore tests (import them explicitly).

    from tests.sdcore.model_fixtures import tiny_model_fixture  # noqa: F401

``tiny_model``: the random tiny model (bytes); ``shapes_model_dir`` and ``shapes_pipe``: the
trained shapes base (pictures).
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


@pytest.fixture(scope="session", name="shapes_model_dir")
def shapes_model_dir_fixture() -> Path:
    """The shipped, trained shapes base model (read-only): use it where a test needs a
    picture that shows something; the tiny random model stays where a test needs bytes."""
    from sdcore.shapes import SHAPES_MODEL_DIR

    return SHAPES_MODEL_DIR


@pytest.fixture(scope="session", name="shapes_pipe")
def shapes_pipe_fixture(shapes_model_dir: Path):  # type: ignore[no-untyped-def]  # a StableDiffusionPipeline
    """The shapes base model loaded once per session through the real loader (CPU, fp32)."""
    from sdcore.loading import load_pipeline

    pipe = load_pipeline(shapes_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe
