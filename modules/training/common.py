"""What textual-inversion and LoRA training share.

- ``TrainingEnv``: the model and the folders a run works with (built from the app's ``Runtime``, or by hand).
- ``frozen_model``: every weight of the model frozen and in eval mode for the run, flags restored afterwards.
- ``encode_prompts``: prompt text -> conditioning with autograd, using the same tokenization, textual-inversion
  placement and hidden-state choice as generation (``modules.conditioning``). Prompts are taken literally: no
  attention weights or BREAK, which for plain captions is what generation computes too.
- ``DiffusionObjective``: the denoising loss on the model's own noise schedule (its scheduler config's betas and
  ``num_train_timesteps``) and prediction type (epsilon: the noise, v_prediction: the velocity).
- ``run_steps``: the optimisation loop with A1111's learning-rate schedule, gradient accumulation and clipping,
  progress in ``JobState`` and tqdm, and interrupt handling.
- ``atomic_save``: write a file next to its destination and rename it into place.
"""
from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modules.conditioning import (CHUNK_LENGTH, EmbeddingLookup, PromptChunk, _branches, chunk_hidden_states,
                                  prompt_tokenizer, tokenize_prompt)
from modules.options import Options
from modules.paths import confine
from modules.progress import JobState
from modules.training.lr_schedule import LearnRateSchedule

if TYPE_CHECKING:
    from modules.lora import LoraLibrary
    from modules.runtime import Runtime

_NAME = re.compile(r"^[\w][\w.\- ]*$")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


# --------------------------------------------------------------------------------------------------------------------
# Where a run works


@dataclass
class TrainingEnv:
    """The model a run trains with and where its files go."""

    model: Any
    """The loaded ``SDModel``; its weights are never changed by training."""
    embeddings_dir: Path
    lora_dir: Path
    data_dir: Path
    """Relative log directories and the user's ``textual_inversion_templates`` are under this."""
    opts: Options = field(default_factory=Options)
    """Clip skip and the options of preview images."""
    loras: LoraLibrary | None = None
    """Scanned again after a LoRA is saved, so that ``/sdapi/v1/loras`` lists it."""
    allowed_output_dirs: tuple[Path, ...] = ()
    """Folders outside ``data_dir`` that log directories may be in (``--allowed-output-dirs``)."""

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> TrainingEnv:
        """The runtime's current model (or its default one) and folders."""
        model = runtime.models.current or runtime.models.select_default()
        if model is None:
            raise ValueError("model: no checkpoint is loaded; load one before training")
        return cls(model, runtime.paths.embeddings_dir, runtime.paths.lora_dir, runtime.paths.data_dir, runtime.opts,
                   runtime.loras, runtime.paths.allowed_output_dirs)


def resolve_env(target: Runtime | TrainingEnv) -> TrainingEnv:
    return target if isinstance(target, TrainingEnv) else TrainingEnv.from_runtime(target)


MAX_NAME_BYTES = 200   # file systems allow 255 bytes per name; room is left for "-<step>.safetensors"


def check_name(name: str, field_name: str) -> str:
    """``name`` stripped, if it can be a file name and trigger word; else ``ValueError`` naming the field."""
    name = name.strip()
    if not name:
        raise ValueError(f"{field_name}: the name is empty")
    if len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise ValueError(f"{field_name}: the name is {len(name.encode('utf-8', 'replace'))} bytes long; at most "
                         f"{MAX_NAME_BYTES} are allowed (it becomes a file name)")
    if not _NAME.match(name):
        raise ValueError(f"{field_name}: {name!r} may only hold letters, digits, spaces, '.', '_' and '-', "
                         "and must start with a letter or digit")
    return name


def check_trainable(model: Any) -> None:
    """Refuse models training cannot handle, before any work."""
    if model.family == "sdxl-refiner":
        raise ValueError("model: an SDXL refiner cannot be trained; load an SDXL base model")
    if model.is_inpaint:
        raise ValueError("model: inpainting models cannot be trained; load a regular checkpoint")


def resolve_dir(data_dir: Path, directory: str, allowed: Sequence[Path] = (), name: str = "log_directory") -> Path:
    """A folder the run writes to: inside ``data_dir`` (or ``allowed``), else ``ValueError`` naming ``name``."""
    return confine(directory, data_dir, allowed, name)


# --------------------------------------------------------------------------------------------------------------------
# The model during a run


def model_modules(model: Any) -> dict[str, torch.nn.Module]:
    """The model's weight-holding components by attribute name."""
    names = ("unet", "vae", *TEXT_ENCODERS)
    return {name: getattr(model, name) for name in names if getattr(model, name) is not None}


@contextmanager
def frozen_model(model: Any) -> Iterator[None]:
    """While active every weight of ``model`` is frozen and in eval mode, and autograd is on (whatever the caller's
    mode); afterwards the flags are what they were. Parameters added meanwhile (adapters) are left alone."""
    modules = list(model_modules(model).values())
    modes = [(module, module.training) for module in modules]
    flags = [(parameter, parameter.requires_grad) for module in modules for parameter in module.parameters()]
    for module in modules:
        module.eval().requires_grad_(False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)
        for module, training in modes:
            module.train(training)


# --------------------------------------------------------------------------------------------------------------------
# Prompts -> conditioning, with gradients


@dataclass(frozen=True)
class TextConditioning:
    embeds: torch.Tensor
    """``[B, 77·k, C]`` hidden states (SDXL: both encoders', concatenated)."""
    pooled: torch.Tensor | None
    """SDXL: ``[B, C2]`` projected pooled output of ``text_encoder_2`` for the first chunk; else None."""

    def select(self, indices: Sequence[int]) -> TextConditioning:
        rows = list(indices)
        return TextConditioning(self.embeds[rows], None if self.pooled is None else self.pooled[rows])


def encode_prompts(model: Any, prompts: Sequence[str], *, clip_skip: int = 1,
                   embeddings: EmbeddingLookup | None = None) -> TextConditioning:
    """Conditioning for ``prompts`` through the graph, so gradients reach textual-inversion vectors (placed where
    ``embeddings`` finds trigger words) and text-encoder adapters. Prompts with fewer chunks are padded with chunks of
    the empty prompt, as generation pads them."""
    chunk_lists = [tokenize_prompt(prompt_tokenizer(model), prompt, emphasis="None", embeddings=embeddings)[0]
                   for prompt in prompts]
    per_prompt = max(len(chunks) for chunks in chunk_lists)
    rows = [chunk for chunks in chunk_lists for chunk in [*chunks, *[PromptChunk()] * (per_prompt - len(chunks))]]
    hidden, pooled = [], None
    for branch in _branches(model, clip_skip):
        z, branch_pooled = chunk_hidden_states(branch, rows, model.device)
        hidden.append(z)
        if branch_pooled is not None:
            pooled = branch_pooled.reshape(len(prompts), per_prompt, -1)[:, 0]
    embeds = torch.cat(hidden, dim=-1).reshape(len(prompts), per_prompt * (CHUNK_LENGTH + 2), -1)
    return TextConditioning(embeds, pooled)


# --------------------------------------------------------------------------------------------------------------------
# The loss


def min_snr_weights(snr: torch.Tensor, gamma: float, *, v_prediction: bool = False,
                    floor: float = 0.0) -> torch.Tensor:
    """Per-sample weights of the ε (or v) loss for min-SNR-γ (Hang et al. 2023; kohya's ``min_snr_gamma``).

    An error in the predicted image costs min(SNR, γ) instead of SNR (γ ≤ 0: no cap), so nearly noise-free steps
    count less; as weights of the ε loss that is min(SNR, γ) / SNR (of the v loss, / (SNR + 1)). `floor` keeps the
    image-space weight at least that much, so the noisiest steps, where the layout is decided, still learn.
    """
    x0_weight = (snr.clamp(max=gamma) if gamma > 0 else snr).clamp(min=floor)
    return x0_weight / (snr + 1 if v_prediction else snr)


class DiffusionObjective:
    """Noise the latents at random timesteps of the model's own training schedule and score the UNet's prediction."""

    def __init__(self, model: Any, min_snr_gamma: float | None = None) -> None:
        from diffusers import DDPMScheduler

        self.model = model
        self.scheduler = DDPMScheduler.from_config(model.scheduler_config, prediction_type=model.prediction_type)
        self.num_timesteps: int = self.scheduler.config.num_train_timesteps
        self.min_snr_gamma = min_snr_gamma

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise like ``latents`` and one timestep per latent."""
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        timesteps = torch.randint(0, self.num_timesteps, (latents.shape[0],), generator=generator)
        return noise, timesteps.to(latents.device)

    def loss(self, latents: torch.Tensor, cond: TextConditioning, noise: torch.Tensor,
             timesteps: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the UNet's prediction against the noise (epsilon) or the velocity (v_prediction).

        With ``min_snr_gamma`` each sample's error is weighted by ``min_snr_weights``: nearly noise-free steps count
        less, so the loss is spent on the noisy steps that decide the layout."""
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        v_prediction = self.scheduler.config.prediction_type == "v_prediction"
        target = self.scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        prediction = self.predict(noisy, timesteps, cond)
        if self.min_snr_gamma is None:
            return F.mse_loss(prediction.float(), target.float())
        alphas = self.scheduler.alphas_cumprod.to(latents.device)[timesteps]
        weight = min_snr_weights(alphas / (1 - alphas), self.min_snr_gamma, v_prediction=v_prediction)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weight).mean()

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        unet = self.model.unet
        added = None
        if cond.pooled is not None:  # SDXL: original size, crop offset, target size = the training size
            height, width = (side * self.model.vae_scale_factor for side in noisy.shape[-2:])
            time_ids = torch.tensor([[height, width, 0, 0, height, width]] * noisy.shape[0], dtype=noisy.dtype,
                                    device=noisy.device)
            added = {"text_embeds": cond.pooled, "time_ids": time_ids}
        return unet(noisy, timesteps, encoder_hidden_states=cond.embeds.to(noisy.dtype),
                    added_cond_kwargs=added).sample


# --------------------------------------------------------------------------------------------------------------------
# The loop


ClipMode = Literal["disabled", "value", "norm"]


@dataclass(frozen=True)
class GradientClipping:
    """A1111's gradient clipping: by value or by norm, the limit following a schedule like the learning rate."""

    mode: ClipMode
    limit: LearnRateSchedule

    def apply(self, parameters: Sequence[torch.Tensor], step: int) -> None:
        if self.mode == "value":
            torch.nn.utils.clip_grad_value_(parameters, self.limit.rate_at(step))
        elif self.mode == "norm":
            torch.nn.utils.clip_grad_norm_(parameters, self.limit.rate_at(step))


@dataclass(frozen=True)
class StepsRun:
    """How a run of ``run_steps`` went."""

    last_step: int
    """The last step completed (the first step minus one when none was)."""
    loss: float | None
    """The loss of the last completed step (averaged over its accumulated batches)."""
    interrupted: bool


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class StepProgress:
    """Step, loss, speed and ETA of a run in ``JobState`` (``sampling_step`` counts this run's steps) and tqdm."""

    def __init__(self, state: JobState, title: str, first_step: int, last_step: int) -> None:
        self.state, self.title, self.last_step = state, title, last_step
        self.total = last_step - first_step + 1
        self.done = 0
        self.started = time.perf_counter()
        state.job_count = max(state.job_count, 1)
        state.sampling_step, state.sampling_steps = 0, self.total
        state.textinfo = f"{title}: starting at step {first_step}/{last_step}"
        self.bar = tqdm(total=self.total, desc=title, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, rate: float) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        speed = self.done / elapsed if elapsed > 0 else math.inf
        eta = (self.total - self.done) / speed if math.isfinite(speed) else 0.0
        self.state.sampling_step = self.done
        self.state.textinfo = (f"{self.title}: step {step}/{self.last_step}, loss {loss:.5f}, learning rate {rate:g}, "
                               f"{speed:.2f} steps/s, ETA {_duration(eta)}")
        self.bar.set_postfix(loss=f"{loss:.5f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_steps(parameters: Sequence[torch.Tensor], batch_loss: Callable[[], torch.Tensor], *, first_step: int,
              last_step: int, learn_rate: LearnRateSchedule, state: JobState, title: str, gradient_step: int = 1,
              clipping: GradientClipping | None = None, weight_decay: float = 0.0,
              after_step: Callable[[int], None] | None = None) -> StepsRun:
    """Optimise ``parameters`` (AdamW) for steps ``first_step..last_step``.

    A step accumulates the gradients of ``gradient_step`` calls of ``batch_loss`` (each scaled by 1/gradient_step),
    clips them, and updates at the schedule's rate for that step; ``after_step(step)`` then runs (saving, previews).
    ``state.interrupted`` is checked before every step: the run then stops with what is done.
    """
    optimizer = torch.optim.AdamW(parameters, lr=learn_rate.rate_at(first_step), weight_decay=weight_decay)
    progress = StepProgress(state, title, first_step, last_step)
    done, loss = first_step - 1, None
    try:
        for step in range(first_step, last_step + 1):
            if state.interrupted:
                break
            rate = learn_rate.rate_at(step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            total = 0.0
            for _ in range(gradient_step):
                batch = batch_loss()
                (batch / gradient_step).backward()
                total += batch.item()
            if clipping is not None:
                clipping.apply(parameters, step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done, loss = step, total / gradient_step
            progress.update(step, loss, rate)
            if after_step is not None:
                after_step(step)
    finally:
        progress.close()
    return StepsRun(done, loss, state.interrupted and done < last_step)


# --------------------------------------------------------------------------------------------------------------------
# Results and files


@dataclass
class TrainResult:
    """What a training job produced."""

    path: Path | None
    """The trained file (``models/embeddings/<name>.pt`` or ``models/Lora/<name>.safetensors``); None when a LoRA
    run was interrupted before its first step, so there was nothing to save."""
    step: int
    """The training step the file holds (for an embedding: counting earlier runs too)."""
    steps_done: int
    """Steps done by this run."""
    loss: float | None
    """The loss of the last step (None when no step was done)."""
    interrupted: bool
    files: list[Path] = field(default_factory=list)
    """Every file this run wrote: the trained file, step copies, preview images."""

    @property
    def message(self) -> str:
        """A line for the UI (A1111 words it the same way)."""
        verb = "interrupted" if self.interrupted else "finished"
        loss = f", loss {self.loss:.5f}" if self.loss is not None else ""
        saved = f"Saved to {self.path}" if self.path is not None else "Nothing was saved"
        return f"Training {verb} at step {self.step}{loss}. {saved}"


def atomic_save(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename the file to ``path``: readers see the old
    file or the new one, never half of one. The temporary name ends in ``.tmp`` so no folder scan picks it up."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
