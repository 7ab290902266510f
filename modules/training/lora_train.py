"""LoRA training on a folder of captioned images, saved as a kohya/A1111 ``.safetensors`` in ``models/Lora``.

PEFT adapters (``LoraConfig``: rank, alpha) are added to the UNet's attention projections (``to_q``, ``to_k``,
``to_v``, ``to_out.0``, or a subset; optionally also the ResNet convolutions ``conv1``/``conv2``, kohya's "LoCon"
layers, which reach looks the attention layers cannot, such as a change of geometry) and, optionally, to the text
encoders' (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), through diffusers' / transformers' ``add_adapter``.
Only the adapters train (AdamW, A1111's learning-rate schedule syntax, optionally kohya's min-SNR-γ weighting); each
image is trained with its own caption (same-named ``.txt`` or ``metadata.jsonl``; an image without one is an error).
The adapters' state dicts (``get_peft_model_state_dict``) are converted with diffusers' ``convert_state_dict_to_kohya``:
keys ``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, text encoders ``lora_te_`` (SD1/SD2)
or ``lora_te1_``/``lora_te2_`` (SDXL), with kohya's ``ss_*`` metadata. A1111, this app
(``<lora:name:weight>``) and diffusers' ``load_lora_weights`` read the file.

Any LoRA a previous generation left loaded is removed first; when the run ends, however it ends, the model has no
adapter layers and its weights are bit-identical to before. An interrupted run saves the steps done.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from safetensors.torch import save_file

from modules import lora
from modules import rng as seeds
from modules.progress import JobState
from modules.training.common import (TEXT_ENCODERS, DiffusionObjective, TextConditioning, TrainingEnv, TrainResult,
                                     atomic_save, check_name, check_trainable, encode_prompts, frozen_model,
                                     resolve_env, run_steps)
from modules.training.dataset import BatchOrder, LatentCache, list_images, load_images, read_captions
from modules.training.lr_schedule import LearnRateSchedule

if TYPE_CHECKING:
    from modules.runtime import Runtime

UnetModule = Literal["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]
UNET_MODULES: tuple[UnetModule, ...] = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
ADAPTER = "being_trained"
"""The adapter's name while it trains (``modules.lora`` only manages adapters named ``lora_*``)."""
WEIGHT_DECAY = 1e-2
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
"""kohya's ``ss_base_model_version`` per model family."""


class TrainLoraRequest(BaseModel):
    """Train ▸ LoRA. ``training_width``/``training_height`` default to the model's native size."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """The file name in ``models/Lora`` (without ``.safetensors``) and the ``<lora:name:...>`` tag's name."""
    data_root: str
    rank: int = Field(4, ge=1, le=256)
    alpha: float | None = Field(None, gt=0)
    """kohya's network alpha; the LoRA's output is scaled by alpha/rank. None: alpha = rank (scale 1)."""
    learn_rate: str = "1e-4"
    """A rate or an A1111 schedule, ``"1e-4:200, 5e-5"``."""
    steps: int = Field(500, ge=1)
    batch_size: int = Field(1, ge=1)
    gradient_step: int = Field(1, ge=1)
    training_width: int | None = Field(None, ge=8, le=2048)
    training_height: int | None = Field(None, ge=8, le=2048)
    unet_modules: list[UnetModule] = Field(default_factory=lambda: list(UNET_MODULES), min_length=1)
    train_text_encoder: bool = False
    min_snr_gamma: float | None = Field(None, gt=0)
    """kohya's min-SNR-γ loss weighting (5 is the usual value); None: plain MSE."""
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    overwrite: bool = False
    seed: int = -1

    @field_validator("learn_rate", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("training_width", "training_height")
    @classmethod
    def _multiple_of_8(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{info.field_name} must be a multiple of 8 (got {value})")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainLoraRequest:
        LearnRateSchedule(self.learn_rate, self.steps, field="learn_rate")
        return self

    @property
    def network_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


def _add_adapters(model: Any, request: TrainLoraRequest) -> list[torch.nn.Parameter]:
    """Add the training adapter to the UNet (and text encoders); returns its parameters, set to train."""
    from peft import LoraConfig

    def config(modules: list[str]) -> LoraConfig:
        return LoraConfig(r=request.rank, lora_alpha=request.network_alpha, init_lora_weights=True,
                          target_modules=modules)

    components = [model.unet]
    model.unet.add_adapter(config(list(request.unet_modules)), adapter_name=ADAPTER)
    if request.train_text_encoder:
        for key in TEXT_ENCODERS:
            encoder = getattr(model, key)
            if encoder is not None:
                encoder.add_adapter(config(list(TEXT_ENCODER_MODULES)), adapter_name=ADAPTER)
                components.append(encoder)
    parameters = [parameter for component in components for name, parameter in component.named_parameters()
                  if ".lora_" in name]
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters


def kohya_state_dict(model: Any, alpha: float) -> dict[str, torch.Tensor]:
    """The training adapter of ``model`` as kohya keys (what A1111 and ``load_lora_weights`` read)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import get_peft_model_state_dict

    peft = {f"unet.{key}": value for key, value in get_peft_model_state_dict(model.unet, adapter_name=ADAPTER).items()}
    for component in TEXT_ENCODERS:
        encoder = getattr(model, component)
        if encoder is None or ADAPTER not in (getattr(encoder, "peft_config", None) or {}):
            continue
        for key, value in get_peft_model_state_dict(encoder, adapter_name=ADAPTER).items():
            # kohya names follow the original CLIPTextModel layout; transformers >= 5.6 flattened it (no text_model.)
            peft[f"{component}.{key if key.startswith('text_model.') else 'text_model.' + key}"] = value
    kohya = convert_state_dict_to_kohya(peft)
    if not model.is_sdxl:  # SD1/SD2 files name their only text encoder lora_te_
        kohya = {key.replace("lora_te1_", "lora_te_", 1): value for key, value in kohya.items()}
    return {key: (torch.tensor(alpha) if key.endswith(".alpha") else value).detach().to("cpu", torch.float32)
            .contiguous() for key, value in kohya.items()}


def _metadata(model: Any, request: TrainLoraRequest, name: str, step: int, size: tuple[int, int],
              images: int) -> dict[str, str]:
    return {
        "ss_output_name": name,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(request.rank),
        "ss_network_alpha": f"{request.network_alpha:g}",
        "ss_network_train_unet_only": str(not request.train_text_encoder),
        "ss_learning_rate": request.learn_rate,
        "ss_steps": str(step),
        "ss_batch_size_per_device": str(request.batch_size),
        "ss_gradient_accumulation_steps": str(request.gradient_step),
        "ss_resolution": f"({size[0]}, {size[1]})",
        "ss_num_train_images": str(images),
        "ss_base_model_version": BASE_MODEL_VERSIONS[model.family],
        "ss_v2": str(model.family == "sd2"),
        "ss_sd_model_name": model.sd_checkpoint_info.model_name,
    }


def _lora_files(directory: Path, name: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.rglob(f"{name}{lora.LORA_SUFFIX}") if path.is_file())


def train_lora(target: Runtime | TrainingEnv, request: TrainLoraRequest, state: JobState) -> TrainResult:
    """Train a LoRA and save it as ``models/Lora/<name>.safetensors`` (a job function: progress and interrupt go
    through ``state``). Returns the file (None when interrupted before the first step), steps done and last loss.

    Every input problem raises ``ValueError`` naming the field before any training starts.
    """
    env = resolve_env(target)
    model = env.model
    check_trainable(model)
    name = check_name(request.name, "name")
    existing = _lora_files(env.lora_dir, name)
    if existing and not request.overwrite:
        raise ValueError(f"name: a LoRA called {name!r} already exists ({existing[0]}); "
                         "choose another name or set overwrite")
    schedule = LearnRateSchedule(request.learn_rate, request.steps)
    width = request.training_width or model.native_size
    height = request.training_height or model.native_size
    for side, value in (("training_width", width), ("training_height", height)):
        if value % model.vae_scale_factor:
            raise ValueError(f"{side}: must be a multiple of {model.vae_scale_factor} for this model")
    image_paths = list_images(request.data_root)
    captions = read_captions(image_paths)
    missing = [path.name for path in image_paths if not captions.get(path)]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"data_root: {len(missing)} image(s) have no caption ({shown}); add a same-named .txt file "
                         f"per image or a metadata.jsonl with file_name and text")
    texts = [captions[path] for path in image_paths]
    pictures = load_images(image_paths, width, height)

    seed = seeds.fixed_seed(request.seed)
    generator = torch.Generator().manual_seed(seed)
    path = env.lora_dir / f"{name}{lora.LORA_SUFFIX}"
    clip_skip = env.opts.CLIP_stop_at_last_layers
    with frozen_model(model):
        lora.unload(model)
        try:
            latents = LatentCache(model, pictures, request.latent_sampling_method, generator)
            del pictures
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # peft draws the adapters' first weights from torch's global generator
                parameters = _add_adapters(model, request)
            fixed: TextConditioning | None = None
            if not request.train_text_encoder:
                with torch.no_grad():
                    fixed = encode_prompts(model, texts, clip_skip=clip_skip)
            objective = DiffusionObjective(model, request.min_snr_gamma)
            order = BatchOrder(len(latents), request.batch_size, random.Random(seed))

            def batch_loss() -> torch.Tensor:
                indices = order.next()
                if fixed is not None:
                    cond = fixed.select(indices)
                else:
                    cond = encode_prompts(model, [texts[i] for i in indices], clip_skip=clip_skip)
                x0 = latents.batch(indices, generator)
                noise, timesteps = objective.draw(x0, generator)
                return objective.loss(x0, cond, noise, timesteps)

            run = run_steps(parameters, batch_loss, first_step=1, last_step=schedule.last_step, learn_rate=schedule,
                            state=state, title=f"Training LoRA {name}", gradient_step=request.gradient_step,
                            weight_decay=WEIGHT_DECAY)
            saved: Path | None = None
            if run.last_step > 0:
                tensors = kohya_state_dict(model, request.network_alpha)
                metadata = _metadata(model, request, name, run.last_step, (width, height), len(image_paths))
                saved = atomic_save(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))
                for other in existing:
                    if other != path:
                        other.unlink()
        finally:
            lora.unload(model)
    if env.loras is not None:
        env.loras.refresh()
    return TrainResult(path=saved, step=run.last_step, steps_done=run.last_step, loss=run.loss,
                       interrupted=run.interrupted, files=[saved] if saved is not None else [])
