"""Tiny random-weight Stable Diffusion models of every family, for tests.

``build_tiny(family)`` makes the diffusers modules; ``write_config_dir`` writes the matching config-only diffusers
folder (what ``modules/configs/<name>`` holds for real models); ``write_checkpoint`` saves the original single-file
layout with ``sd_config`` metadata naming that folder; ``write_diffusers_folder`` saves a full diffusers folder.
The tokenizers are the real CLIP ones from ``modules/configs/sd15/tokenizer`` (OpenCLIP pads with ``!``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.ldm_convert import Family, diffusers_to_ldm
from modules.paths import CONFIGS_DIR, REPO_ROOT, Paths

SD15_TOKENIZER = CONFIGS_DIR / "sd15" / "tokenizer"
SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False, "timestep_spacing": "leading",
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
    "use_karras_sigmas": False, "prediction_type": "epsilon",
}


@dataclass
class TinyModel:
    family: Family
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: nn.Module | None
    text_encoder_2: nn.Module | None
    scheduler: dict
    prediction_type: str

    @property
    def pipeline_class(self) -> str:
        return {"sdxl": "StableDiffusionXLPipeline", "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline"}.get(
            self.family, "StableDiffusionPipeline")

    def modules(self) -> dict[str, nn.Module]:
        parts = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                 "text_encoder_2": self.text_encoder_2}
        return {k: v for k, v in parts.items() if v is not None}


def _clip(hidden: int, layers: int, act: str, with_projection: bool = False, projection_dim: int = 32) -> nn.Module:
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                            num_attention_heads=4, vocab_size=49408, max_position_embeddings=77, hidden_act=act,
                            projection_dim=projection_dim, pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae(blocks: tuple[int, ...]) -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks,
                         down_block_types=("DownEncoderBlock2D",) * len(blocks),
                         up_block_types=("UpDecoderBlock2D",) * len(blocks),
                         layers_per_block=1, norm_num_groups=16, sample_size=32)


def build_tiny(family: Family, *, inpaint: bool = False, prediction_type: str | None = None, seed: int = 0) -> TinyModel:
    """Random tiny modules of ``family`` (deterministic for a seed), in eval mode."""
    torch.manual_seed(seed)
    in_channels = 9 if inpaint else 4
    te2 = None
    if family == "sd1":
        te = _clip(32, 2, "quick_gelu")
        unet = UNet2DConditionModel(sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=2,
                                    block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
                                    attention_head_dim=8,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae, scheduler, pred = _vae((16, 32, 32)), dict(SCHEDULER), prediction_type or "epsilon"
    elif family == "sd2":
        # SD2 reads the penultimate layer of a 24-layer OpenCLIP: 23 layers here, 24 in the file (gotcha 6).
        te = _clip(32, 23, "gelu")
        unet = UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
                                    attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
        pred = prediction_type or "v_prediction"
        vae, scheduler = _vae((16, 32, 32, 32)), dict(SCHEDULER, _class_name="DDIMScheduler", prediction_type=pred)
    elif family in ("sdxl", "sdxl-refiner"):
        # TE widths must differ: diffusers tells SDXL's two encoders apart by width (gotcha 6).
        te = _clip(32, 2, "quick_gelu") if family == "sdxl" else None
        te2 = _clip(64, 2, "gelu", with_projection=True, projection_dim=48)
        time_dim = 8
        n_time_ids = 6 if family == "sdxl" else 5  # the refiner conditions on an aesthetic score, not target size
        unet = UNet2DConditionModel(sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=2,
                                    block_out_channels=(32, 64), norm_num_groups=16,
                                    cross_attention_dim=(32 if te else 0) + 64, attention_head_dim=(2, 4),
                                    transformer_layers_per_block=(1, 2), use_linear_projection=True,
                                    addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                                    projection_class_embeddings_input_dim=n_time_ids * time_dim + 48,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
        vae, scheduler, pred = _vae((16, 32, 32)), dict(SDXL_SCHEDULER), prediction_type or "epsilon"
    else:
        raise ValueError(family)
    scheduler["prediction_type"] = pred
    model = TinyModel(family, unet, vae, te, te2, scheduler, pred)
    for module in model.modules().values():
        module.eval()
    return model


def _write_tokenizer(out: Path, pad_token: str) -> None:
    shutil.copytree(SD15_TOKENIZER, out)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = json.loads((out / name).read_text())
        data["pad_token"] = pad_token
        (out / name).write_text(json.dumps(data, indent=2))


def write_config_dir(model: TinyModel, out: Path) -> Path:
    """Config-only diffusers folder for ``model`` (no weights)."""
    out.mkdir(parents=True, exist_ok=True)
    index: dict = {"_class_name": model.pipeline_class, "_diffusers_version": "0.42.1",
                   "scheduler": ["diffusers", model.scheduler["_class_name"]], "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"]}
    for name, module in model.modules().items():
        if name in ("unet", "vae"):
            module.save_config(out / name)
        else:
            module.config.save_pretrained(out / name)
            index[name] = ["transformers", type(module).__name__]
    if model.family in ("sd1", "sd2"):
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    else:
        index.update(force_zeros_for_empty_prompt=True)
        if model.family == "sdxl-refiner":
            index.update(requires_aesthetics_score=True)
    if model.text_encoder is not None:
        _write_tokenizer(out / "tokenizer", "!" if model.family == "sd2" else "<|endoftext|>")
        index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if model.text_encoder_2 is not None:
        _write_tokenizer(out / "tokenizer_2", "!")
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    if model.family == "sdxl-refiner":
        index.update(text_encoder=[None, None], tokenizer=[None, None])
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler, indent=2))
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def ldm_state_dict(model: TinyModel) -> dict[str, torch.Tensor]:
    return diffusers_to_ldm(model.unet, model.vae, model.text_encoder, model.text_encoder_2, family=model.family)


def write_checkpoint(model: TinyModel, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Original single-file layout; ``metadata`` typically names the config dir: ``{"sd_config": "<dirname>"}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(model), str(path), metadata=metadata)
    return path


def write_diffusers_folder(model: TinyModel, out: Path) -> Path:
    """Full diffusers folder: the config dir plus each module's weights."""
    write_config_dir(model, out)
    for name, module in model.modules().items():
        module.save_pretrained(out / name)
    return out


# Config folder names ModelManager picks per family (modules/configs holds the real-size ones).
FAMILY_CONFIG_NAMES: dict[str, Family] = {"sd15": "sd1", "sd21": "sd2", "sd21-base": "sd2", "sdxl": "sdxl",
                                          "sdxl-refiner": "sdxl-refiner"}
TINY_SD21_SAMPLE_SIZE = 12  # tiny "sd21" (768-v) differs from tiny "sd21-base" in sample size only, as the real ones


def write_tiny_configs(out: Path) -> Path:
    """Tiny stand-ins for the shipped config folders, under the same names, for ``ModelManager(configs_dirs=...)``."""
    for name, family in FAMILY_CONFIG_NAMES.items():
        model = build_tiny(family, prediction_type="epsilon" if name == "sd21-base" else None)
        write_config_dir(model, out / name)
        if name == "sd21":
            unet_config = out / name / "unet" / "config.json"
            unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()), "sample_size": TINY_SD21_SAMPLE_SIZE}))
    return out


SHIPPED = sorted((REPO_ROOT / "models" / "Stable-diffusion").glob("*.safetensors"))


def paths_with_shipped_models(data_dir: Path) -> Paths:
    """Paths of a data dir whose checkpoint folder holds copies of the shipped models and their checksum files."""
    paths = Paths.from_args(data_dir)
    paths.ckpt_dir.mkdir(parents=True)
    for path in SHIPPED:
        shutil.copy(path, paths.ckpt_dir)
        shutil.copy(path.with_name(path.name + ".sha256"), paths.ckpt_dir)
    return paths
