"""Kind and architecture from tensor names and shapes; metadata summaries."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sdcore.detect import detect, read_lora_alpha, summarize_metadata
from sdcore.safetensors_header import read_header
from tests.sdcore.fixtures import (
    header_of,
    kohya_lora_spec,
    safetensors_bytes,
    sd1_checkpoint_spec,
    sdxl_checkpoint_spec,
    write_bytes,
)

# --- checkpoints -------------------------------------------------------------------------


def test_sd1_single_file_checkpoint() -> None:
    # given
    header = header_of(sd1_checkpoint_spec(context_dim=768))
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sd1")
    assert found.details["context_dim"] == 768
    assert found.details["components"] == ["unet", "vae", "text_encoder"]


def test_sd2_single_file_checkpoint() -> None:
    # given
    header = header_of(sd1_checkpoint_spec(context_dim=1024))
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sd2")


def test_sdxl_single_file_checkpoint() -> None:
    # given
    header = header_of(sdxl_checkpoint_spec())
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sdxl")
    assert found.details["context_dim"] == 2048


def test_sdxl_is_recognized_by_its_second_text_encoder_without_attention_keys() -> None:
    # given
    spec = {k: v for k, v in sdxl_checkpoint_spec().items() if "attn2" not in k}
    # when
    found = detect(header_of(spec))
    # then
    assert found.architecture == "sdxl"


def test_inpainting_checkpoint_is_noted_from_its_nine_input_channels() -> None:
    # given
    header = header_of(sd1_checkpoint_spec(in_channels=9))
    # when
    found = detect(header)
    # then
    assert found.details["variant"] == "inpainting"
    assert found.details["in_channels"] == 9


def test_diffusers_unet_file_is_a_checkpoint_with_its_architecture() -> None:
    # given
    spec = {
        "conv_in.weight": ("F32", (320, 4, 3, 3)),
        "time_embedding.linear_1.weight": ("F32", (1280, 320)),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F32", (320, 1024)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sd2")
    assert found.details["layout"] == "diffusers"


def test_sdxl_diffusers_unet_file() -> None:
    # given
    spec = {
        "conv_in.weight": ("F16", (320, 4, 3, 3)),
        "time_embedding.linear_1.weight": ("F16", (1280, 320)),
        "add_embedding.linear_1.weight": ("F16", (1280, 2816)),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F16", (640, 2048)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sdxl")


def test_unet_only_file_in_the_original_layout() -> None:
    # given
    spec = {
        "input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)),
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": ("F16", (320, 768)),
        "middle_block.0.in_layers.0.weight": ("F16", (1280,)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("checkpoint", "sd1")
    assert found.details["layout"] == "ldm"


def test_sd3_and_flux_checkpoints_are_named_when_plain() -> None:
    # given
    sd3 = header_of(
        {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": ("F16", (2, 2))}
    )
    flux = header_of(
        {
            "double_blocks.0.img_attn.qkv.weight": ("F16", (2, 2)),
            "single_blocks.0.linear1.weight": ("F16", (2, 2)),
        }
    )
    # when / then
    assert (detect(sd3).kind, detect(sd3).architecture) == ("checkpoint", "sd3")
    assert (detect(flux).kind, detect(flux).architecture) == ("checkpoint", "flux")


def test_shapes_win_over_metadata_and_the_disagreement_is_noted() -> None:
    # given
    header = header_of(
        sd1_checkpoint_spec(), {"modelspec.architecture": "stable-diffusion-xl-v1-base"}
    )
    # when
    found = detect(header)
    # then
    assert found.architecture == "sd1"
    assert found.details["metadata_architecture"] == "sdxl"


# --- LoRA, LoCon, LyCORIS ----------------------------------------------------------------


def test_kohya_sd1_lora_rank_alpha_and_format() -> None:
    # given
    header = header_of(
        kohya_lora_spec(rank=16), {"ss_network_alpha": "8.0", "ss_network_dim": "16"}
    )
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture) == ("lora", "sd1")
    assert found.lora_rank == 16
    assert found.lora_alpha == 8.0
    assert found.lora_format == "kohya"
    assert found.details["targets"] == ["text_encoder", "unet"]


def test_kohya_lora_without_alpha_metadata_has_no_alpha() -> None:
    # given
    header = header_of(kohya_lora_spec(rank=4))
    # when
    found = detect(header)
    # then
    assert found.lora_alpha is None
    assert found.details["has_alpha_tensors"] is True


def test_kohya_sd2_lora_from_its_text_encoder_width() -> None:
    # given
    spec = {
        k: v
        for k, v in kohya_lora_spec(rank=4, text_width=1024, context_dim=1024).items()
        if k.startswith("lora_te_")
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("lora", "sd2")


def test_kohya_sdxl_lora_from_its_two_text_encoders() -> None:
    # given
    header = header_of(kohya_lora_spec(rank=32, context_dim=2048, sdxl=True))
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture, found.lora_rank) == ("lora", "sdxl", 32)


def test_kohya_sdxl_unet_only_lora_from_its_context_width() -> None:
    # given
    spec = {
        k: v
        for k, v in kohya_lora_spec(rank=8, context_dim=2048, sdxl=True).items()
        if k.startswith("lora_unet_")
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.architecture == "sdxl"


def test_lora_without_telling_shapes_takes_the_architecture_from_metadata() -> None:
    # given
    spec = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": ("F16", (4, 1280)),
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": ("F16", (1280, 4)),
    }
    # when
    found = detect(header_of(spec, {"ss_base_model_version": "sdxl_base_v1-0"}))
    # then
    assert found.architecture == "sdxl"
    assert found.details["architecture_source"] == "metadata"


def test_dynamic_rank_lora_reports_the_most_common_rank_and_all_ranks() -> None:
    # given
    spec = {
        "lora_unet_a.lora_down.weight": ("F16", (4, 320)),
        "lora_unet_b.lora_down.weight": ("F16", (8, 320)),
        "lora_unet_c.lora_down.weight": ("F16", (8, 320)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.lora_rank == 8
    assert found.details["ranks"] == [4, 8]


def test_locon_is_a_lora_with_conv_layers_noted() -> None:
    # given
    spec = {
        **kohya_lora_spec(rank=8),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": ("F16", (4, 320, 3, 3)),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": ("F16", (320, 4, 1, 1)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.kind == "lora"
    assert found.details["locon"] is True
    assert found.details["conv_rank"] == 4
    assert found.details["algorithm"] == "locon"


def test_loha_is_lycoris_with_its_rank() -> None:
    # given
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    spec = {
        f"{module}.alpha": ("F16", ()),
        f"{module}.hada_w1_a": ("F16", (320, 6)),
        f"{module}.hada_w1_b": ("F16", (6, 768)),
        f"{module}.hada_w2_a": ("F16", (320, 6)),
        f"{module}.hada_w2_b": ("F16", (6, 768)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.lora_rank, found.lora_format) == ("lycoris", 6, "kohya")
    assert found.details["algorithm"] == "loha"


def test_lokr_is_lycoris() -> None:
    # given
    module = "lora_unet_down_blocks_0_attentions_0_proj_in"
    spec = {
        f"{module}.lokr_w1": ("F16", (4, 4)),
        f"{module}.lokr_w2_a": ("F16", (80, 2)),
        f"{module}.lokr_w2_b": ("F16", (2, 80)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.kind == "lycoris"
    assert found.details["algorithm"] == "lokr"


def test_diffusers_lora_with_peft_keys() -> None:
    # given
    base = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    spec = {
        f"{base}.lora_A.weight": ("F32", (4, 768)),
        f"{base}.lora_B.weight": ("F32", (320, 4)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture, found.lora_format) == ("lora", "sd1", "diffusers")
    assert found.lora_rank == 4


def test_peft_lora_saved_by_save_pretrained() -> None:
    # given
    base = "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    spec = {
        f"{base}.lora_A.weight": ("F32", (2, 1024)),
        f"{base}.lora_B.weight": ("F32", (320, 2)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.lora_format, found.architecture, found.lora_rank) == ("peft", "sd2", 2)


def test_old_diffusers_attention_processor_lora() -> None:
    # given
    base = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora"
    spec = {
        f"{base}.down.weight": ("F32", (4, 768)),
        f"{base}.up.weight": ("F32", (320, 4)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.lora_format, found.architecture) == ("lora", "diffusers", "sd1")


def test_flux_lora_in_kohya_naming() -> None:
    # given
    spec = {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": ("BF16", (16, 3072)),
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": ("BF16", (9216, 16)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("lora", "flux")


def test_read_lora_alpha_reads_the_first_alpha_scalar(tmp_path: Path) -> None:
    # given
    spec = kohya_lora_spec(rank=4)
    alpha_names = [n for n in spec if n.endswith(".alpha")]
    data = {n: np.array(2.5, np.float16).tobytes() for n in alpha_names}
    path = write_bytes(tmp_path / "lora.safetensors", safetensors_bytes(spec, data=data))
    header = read_header(path)
    # when
    alpha = read_lora_alpha(path, header)
    # then
    assert alpha == 2.5


def test_read_lora_alpha_decodes_bf16(tmp_path: Path) -> None:
    # given
    bits = struct.unpack("<I", struct.pack("<f", 16.0))[0] >> 16
    spec = {"lora_unet_a.alpha": ("BF16", ()), "lora_unet_a.lora_down.weight": ("BF16", (4, 8))}
    data = {"lora_unet_a.alpha": struct.pack("<H", bits)}
    path = write_bytes(tmp_path / "lora.safetensors", safetensors_bytes(spec, data=data))
    # when
    alpha = read_lora_alpha(path, read_header(path))
    # then
    assert alpha == 16.0


def test_read_lora_alpha_is_none_without_alpha_tensors(tmp_path: Path) -> None:
    # given
    spec = {"unet.x.lora_A.weight": ("F32", (4, 8)), "unet.x.lora_B.weight": ("F32", (8, 4))}
    path = write_bytes(tmp_path / "lora.safetensors", safetensors_bytes(spec))
    # when
    alpha = read_lora_alpha(path, read_header(path))
    # then
    assert alpha is None


# --- embeddings --------------------------------------------------------------------------


def test_a1111_embedding_with_emb_params() -> None:
    # given
    header = header_of({"emb_params": ("F32", (3, 768))})
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture, found.embedding_vectors) == ("embedding", "sd1", 3)


def test_converted_embedding_with_string_to_param() -> None:
    # given
    header = header_of({"string_to_param.*": ("F32", (8, 1024))})
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture, found.embedding_vectors) == ("embedding", "sd2", 8)


def test_single_vector_embedding() -> None:
    # given
    header = header_of({"emb_params": ("F16", (768,))})
    # when
    found = detect(header)
    # then
    assert (found.embedding_vectors, found.architecture) == (1, "sd1")


def test_sdxl_embedding_with_clip_l_and_clip_g() -> None:
    # given
    header = header_of({"clip_g": ("F32", (2, 1280)), "clip_l": ("F32", (2, 768))})
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture, found.embedding_vectors) == ("embedding", "sdxl", 2)
    assert found.details["dims"] == {"clip_g": 1280, "clip_l": 768}


# --- VAE and ControlNet -----------------------------------------------------------------


def test_vae_in_the_original_layout() -> None:
    # given
    spec = {
        "encoder.down.0.block.0.conv1.weight": ("F32", (128, 128, 3, 3)),
        "decoder.conv_in.weight": ("F32", (512, 4, 3, 3)),
        "quant_conv.weight": ("F32", (8, 8, 1, 1)),
        "post_quant_conv.weight": ("F32", (4, 4, 1, 1)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.kind == "vae"
    assert found.details == {"layout": "ldm", "latent_channels": 4}


def test_vae_in_the_diffusers_layout() -> None:
    # given
    spec = {
        "encoder.down_blocks.0.resnets.0.conv1.weight": ("F32", (128, 128, 3, 3)),
        "decoder.conv_in.weight": ("F32", (512, 16, 3, 3)),
        "decoder.up_blocks.0.resnets.0.conv1.weight": ("F32", (512, 512, 3, 3)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.details["layout"], found.details["latent_channels"]) == (
        "vae",
        "diffusers",
        16,
    )


def test_vae_extracted_with_its_checkpoint_prefix() -> None:
    # given
    spec = {
        "first_stage_model.encoder.down.0.block.0.conv1.weight": ("F32", (128, 128, 3, 3)),
        "first_stage_model.decoder.conv_in.weight": ("F32", (512, 4, 3, 3)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert found.kind == "vae"


def test_vae_architecture_comes_from_metadata_only() -> None:
    # given
    spec = {
        "decoder.conv_in.weight": ("F32", (512, 4, 3, 3)),
        "decoder.up.0.block.0.x": ("F32", (1,)),
    }
    # when
    found = detect(header_of(spec, {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}))
    # then
    assert (found.kind, found.architecture) == ("vae", "sdxl")


def test_controlnet_in_the_original_layout() -> None:
    # given
    spec = {
        "control_model.input_hint_block.0.weight": ("F16", (16, 3, 3, 3)),
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
            "F16",
            (320, 768),
        ),
        "control_model.zero_convs.0.0.weight": ("F16", (320, 320, 1, 1)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("controlnet", "sd1")


def test_controlnet_in_the_diffusers_layout() -> None:
    # given
    spec = {
        "controlnet_cond_embedding.conv_in.weight": ("F16", (16, 3, 3, 3)),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F16", (640, 2048)),
        "conv_in.weight": ("F16", (320, 4, 3, 3)),
        "time_embedding.linear_1.weight": ("F16", (1280, 320)),
    }
    # when
    found = detect(header_of(spec))
    # then
    assert (found.kind, found.architecture) == ("controlnet", "sdxl")
    assert found.details["layout"] == "diffusers"


def test_unrecognized_tensors_are_unknown() -> None:
    # given
    header = header_of({"weights.0": ("F32", (3, 3)), "bias.0": ("F32", (3,))})
    # when
    found = detect(header)
    # then
    assert (found.kind, found.architecture) == ("unknown", "unknown")


def test_detects_from_a_real_file_written_by_safetensors(tmp_path: Path) -> None:
    # given
    path = write_bytes(
        tmp_path / "emb.safetensors", safetensors_bytes({"emb_params": ("F32", (2, 768))})
    )
    # when
    found = detect(read_header(path))
    # then
    assert (found.kind, found.embedding_vectors) == ("embedding", 2)


# --- metadata ----------------------------------------------------------------------------

KOHYA_METADATA = {
    "ss_base_model_version": "sd_v1",
    "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
    "ss_network_dim": "32",
    "ss_network_alpha": "16.0",
    "ss_network_module": "networks.lora",
    "ss_network_args": '{"conv_dim": "8", "conv_alpha": "1"}',
    "ss_learning_rate": "0.0001",
    "ss_num_train_images": "120",
    "ss_tag_frequency": json.dumps({"10_cat": {"cat": 40, " sitting ": 12}, "5_dog": {"cat": 2}}),
    "ss_output_name": "my_cat",
    "ss_v2": "False",
    "ss_seed": "None",
    "sshs_model_hash": "ab" * 32,
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.title": "My Cat",
    "modelspec.trigger_phrase": "my cat ",
    "format": "pt",
}


def test_summary_types_kohya_values() -> None:
    # given / when
    summary = summarize_metadata(KOHYA_METADATA)
    # then
    kohya = summary["kohya"]
    assert kohya["network_dim"] == 32
    assert kohya["network_alpha"] == 16.0
    assert kohya["learning_rate"] == 0.0001
    assert kohya["num_train_images"] == 120
    assert kohya["v2"] is False
    assert kohya["seed"] is None
    assert kohya["network_args"] == {"conv_dim": "8", "conv_alpha": "1"}
    assert kohya["sd_model_name"] == "v1-5-pruned-emaonly.safetensors"
    assert kohya["sshs_model_hash"] == "ab" * 32


def test_summary_parses_tag_frequency_and_ranks_tags() -> None:
    # given / when
    summary = summarize_metadata(KOHYA_METADATA)
    # then
    assert summary["kohya"]["tag_frequency"]["10_cat"]["cat"] == 40
    assert summary["top_tags"][0] == {"tag": "cat", "count": 42}
    assert {"tag": "sitting", "count": 12} in summary["top_tags"]


def test_summary_keeps_modelspec_and_other_keys() -> None:
    # given / when
    summary = summarize_metadata(KOHYA_METADATA)
    # then
    assert summary["modelspec"]["title"] == "My Cat"
    assert summary["trigger_phrase"] == "my cat"
    assert summary["architecture"] == "sd1"
    assert summary["other"] == {"format": "pt"}


def test_summary_keeps_malformed_json_as_a_string() -> None:
    # given
    metadata = {"ss_tag_frequency": "{not json", "ss_network_dim": "lots"}
    # when
    summary = summarize_metadata(metadata)
    # then
    assert summary["kohya"]["tag_frequency"] == "{not json"
    assert summary["kohya"]["network_dim"] == "lots"
    assert "top_tags" not in summary


def test_summary_is_json_serializable() -> None:
    # given / when
    text = json.dumps(summarize_metadata(KOHYA_METADATA), allow_nan=False)
    # then
    assert "my_cat" in text


@settings(max_examples=100, deadline=2000)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "ss_tag_frequency",
                "ss_network_dim",
                "ss_network_alpha",
                "ss_v2",
                "ss_network_args",
                "ss_base_model_version",
                "modelspec.architecture",
                "modelspec.trigger_phrase",
                "other",
            ]
        ),
        st.text(max_size=40)
        | st.sampled_from(["NaN", "Infinity", "1e999", '{"a": {"b": 1}}', '{"a": {"b": true}}']),
    )
)
def test_summary_never_raises_and_stays_json(metadata: dict[str, str]) -> None:
    # given / when
    summary = summarize_metadata(metadata)
    # then
    json.dumps(summary, allow_nan=False)
