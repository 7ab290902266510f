"""diffusers -> LDM single-file layout: round trip through diffusers' own ``from_single_file`` loader, bit-identical."""
from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from modules.ldm_convert import diffusers_to_ldm
from tests.fixtures_models import build_tiny, ldm_state_dict, write_checkpoint, write_config_dir

PIPELINES = {"sd1": StableDiffusionPipeline, "sd2": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline,
             "sdxl-refiner": StableDiffusionXLImg2ImgPipeline}


def _assert_same_weights(expected: torch.nn.Module, loaded: torch.nn.Module, what: str) -> None:
    want, got = expected.state_dict(), loaded.state_dict()
    assert set(want) == set(got), f"{what}: key sets differ: {sorted(set(want) ^ set(got))[:5]}"
    for key, tensor in want.items():
        assert torch.equal(tensor, got[key]), f"{what}: {key} differs"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl-refiner"])
def test_round_trip_is_bit_identical(family, tmp_path):
    model = build_tiny(family)
    config = write_config_dir(model, tmp_path / "config")
    path = write_checkpoint(model, tmp_path / "model.safetensors")

    pipe = PIPELINES[family].from_single_file(str(path), config=str(config), local_files_only=True)

    for name, module in model.modules().items():
        _assert_same_weights(module, getattr(pipe, name), f"{family} {name}")
    assert pipe.scheduler.config.prediction_type == model.prediction_type


def test_inpainting_unet_round_trip(tmp_path):
    from diffusers import UNet2DConditionModel

    model = build_tiny("sd1", inpaint=True)
    config = write_config_dir(model, tmp_path / "config")
    path = write_checkpoint(model, tmp_path / "model.safetensors")
    unet = UNet2DConditionModel.from_single_file(str(path), config=str(config), subfolder="unet", local_files_only=True)
    assert unet.config.in_channels == 9
    _assert_same_weights(model.unet, unet, "inpaint unet")


def test_layout_has_the_original_names():
    sd1 = ldm_state_dict(build_tiny("sd1"))
    assert sd1["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 4
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in sd1  # layers_per_block 2: downsampler at (2+1)*1
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" not in sd1  # last up block has no upsampler
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd1  # up block 0 has no attention: upsampler at .1
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in sd1
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in sd1
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in sd1

    sd2 = ldm_state_dict(build_tiny("sd2"))
    assert "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight" in sd2  # 23 layers + the unused 24th
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    assert "model.diffusion_model.output_blocks.1.2.conv.weight" in sd2  # attention up block: upsampler at .2

    xl = ldm_state_dict(build_tiny("sdxl"))
    assert "model.diffusion_model.label_emb.0.0.weight" in xl
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in xl
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (64, 48)  # OpenCLIP: x @ projection

    refiner = ldm_state_dict(build_tiny("sdxl-refiner"))
    assert "conditioner.embedders.0.model.text_projection" in refiner
    assert not any(k.startswith("conditioner.embedders.1.") for k in refiner)


def test_refuses_what_it_cannot_store():
    model = build_tiny("sd1")
    with pytest.raises(ValueError, match="unknown family"):
        diffusers_to_ldm(model.unet, model.vae, model.text_encoder, family="sd3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an OpenCLIP"):
        diffusers_to_ldm(model.unet, model.vae, model.text_encoder, family="sdxl")


@pytest.mark.parametrize("config_name, family", [("sd15", "sd1"), ("sd21", "sd2"), ("sdxl", "sdxl"),
                                                 ("sdxl-refiner", "sdxl-refiner")])
def test_shipped_real_size_configs_convert_to_what_diffusers_reads(config_name, family):
    """Real architectures on the meta device (no memory): names and shapes survive diffusers' own LDM converters."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.paths import CONFIGS_DIR

    config = CONFIGS_DIR / config_name
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")) \
            if (config / "text_encoder").is_dir() else None
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2")) \
            if (config / "text_encoder_2").is_dir() else None
    sd = diffusers_to_ldm(unet, vae, te, te2, family=family)

    def same_layout(back: dict, module: torch.nn.Module, strip: str = "") -> bool:
        want = module.state_dict()
        back = {k.removeprefix(strip): v for k, v in back.items()}
        return set(back) == set(want) and all(back[k].shape == want[k].shape for k in want)

    assert same_layout(convert_ldm_unet_checkpoint(sd, dict(unet.config)), unet)
    assert same_layout(convert_ldm_vae_checkpoint(sd, dict(vae.config)), vae)
    openclip_prefix = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model.",
                       "sdxl-refiner": "conditioner.embedders.0.model."}.get(family)
    if family in ("sd1", "sdxl"):
        assert same_layout(convert_ldm_clip_checkpoint(sd), te, strip="text_model.")
    if family == "sd2":  # diffusers drops OpenCLIP block 23 and the projection, as it does for real SD2 files
        assert same_layout(convert_open_clip_checkpoint(te, sd, prefix=openclip_prefix), te, strip="text_model.")
    elif openclip_prefix:
        assert same_layout(convert_open_clip_checkpoint(te2, sd, prefix=openclip_prefix), te2)
    if config_name == "sd15":  # the tensor counts of the original v1-5 single file
        counts = [sum(k.startswith(p) for k in sd) for p in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")]
        assert counts == [686, 248, 196]
