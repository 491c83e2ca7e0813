"""An SDXL job on a real federation: one SuperLink, two SuperNodes, the ``flwr`` CLI.

The tiny SDXL base (two text encoders, pooled embeddings and time ids) trains a DP FFA-LoRA
for one round on two owners' datasets (the nodes load the original single file); the ServerApp
exports the LoRA in both formats, with SDXL metadata, and both load in diffusers' SDXL
pipeline and change its image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from federated.engine.localfed import LocalFederation
from sdcore.tiny import TinyModelPaths
from sdcore.tiny_xl import save_tiny_sdxl_model
from tests.federated.flower.conftest import Owner, make_owners, run_config
from tests.federated.live import TEST_NODE_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def xl_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_sdxl_model(tmp_path_factory.mktemp("xl-fed-model"), seed=0)


@pytest.fixture(scope="module")
def xl_job(
    tmp_path_factory: pytest.TempPathFactory, xl_model: TinyModelPaths
) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("xl-federation")
    # The nodes and the ServerApp load the original single file, as a job on the site does
    single = xl_model.single_file
    owners = [Owner(replace(o.spec, base_model_path=single)) for o in make_owners(root, xl_model)]
    with LocalFederation(
        [o.spec for o in owners], root / "fed", node_config=TEST_NODE_CONFIG
    ) as fed:
        outcome = fed.run(
            run_config(
                root / "out",
                xl_model,
                **{
                    "base-model-path": str(single),
                    "num-server-rounds": 1,
                    "local-steps": 4,
                    "job-id": "job-xl",
                    "rank": 2,
                    "alpha": 4.0,
                    "sample-grid-steps": 4,
                },
            ),
            timeout=400,
        )
        assert outcome.ok, (outcome.details, fed.logs()["superlink"][-3000:])
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    yield {"metrics": metrics, "owners": owners, "out": root / "out"}


def test_an_sdxl_round_is_private_and_matches_the_nodes_ledgers(xl_job: dict[str, object]) -> None:
    metrics = xl_job["metrics"]
    owners: list[Owner] = xl_job["owners"]  # type: ignore[assignment]
    (record,) = metrics["rounds"]  # type: ignore[index]
    assert record["all-replies-passed-check"] and len(record["nodes"]) == 2
    reported = sorted(float(n["epsilon"]) for n in metrics["nodes"].values())  # type: ignore[index]
    ledgers = sorted(o.ledger.job_spend(o.key, "job-xl").epsilon for o in owners)  # type: ignore[union-attr]
    assert np.allclose(reported, ledgers, rtol=1e-9) and all(0 < e <= 8.0 for e in reported)


def test_the_sdxl_lora_loads_in_diffusers_from_both_formats_and_changes_the_image(
    xl_job: dict[str, object], xl_model: TinyModelPaths
) -> None:
    from diffusers import StableDiffusionXLPipeline

    def image(pipe: StableDiffusionXLPipeline) -> np.ndarray:
        pipe.set_progress_bar_config(disable=True)
        result = pipe(
            "a photo of sks red circle",
            height=64,
            width=64,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        return np.asarray(result.images[0])

    reference = image(StableDiffusionXLPipeline.from_pretrained(xl_model.diffusers_dir))
    final = xl_job["metrics"]["final"]  # type: ignore[index]
    images = []
    for path in (Path(final["diffusers"]), Path(final["kohya"])):
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            names = list(handle.keys())
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
        assert meta["ss_dp_enabled"] == "true" and float(meta["ss_dp_epsilon"]) > 0
        if path.name == "lora.safetensors":
            # sd-scripts' SDXL names: the original UNet's blocks, never diffusers' names
            assert all(n.startswith("lora_unet_") for n in names)
            assert any(n.startswith("lora_unet_input_blocks_") for n in names)
            assert not any("down_blocks" in n or "up_blocks" in n for n in names)
        pipe = StableDiffusionXLPipeline.from_pretrained(xl_model.diffusers_dir)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        images.append(image(pipe))
        assert np.abs(images[-1] - reference).max() > 0, path
    np.testing.assert_allclose(images[0], images[1], atol=1e-5)
