"""Train the shipped default model: a tiny Stable Diffusion (SD1 architecture) on the shapes world.

    python -m modules.train_default_model --out training_runs/default [--preset gpu|cpu|smoke] [--device auto]
                                          [--vae-steps N --unet-steps N --seed S ...]

Three stages (``--stages``), each resumable from the checkpoint it keeps in ``--out`` (rerun the same command after
an interruption; Ctrl-C or SIGTERM stop after the step in progress and save it):

1. ``vae``: AutoencoderKL (f=4, 4 latent channels): L1 + an L1 term on image gradients (keeps edges sharp) + a small
   KL, and an anchor pulling three latent channels towards the 4×4-averaged RGB image (an image-like latent space
   that trains fast and is easy to diffuse in).
2. ``decoder``: the decoder alone fine-tuned on the frozen encoder's latents (sharper shapes; the latent space stays
   the same, so this stage may also run beside the next one).
3. ``unet``: UNet2DConditionModel and a small CLIPTextModel trained together on captions of solid scenes (10% empty
   for CFG) with SD's noise schedule (scaled_linear betas 0.00085→0.012, 1000 steps, epsilon prediction), min-SNR
   weighting and an EMA of the weights. Additions join at set steps: extra low-frequency noise and a floor on the
   weight of the noisiest steps (``--layout-from-step``, see low_frequency_noise); the captions naming only the
   object or only the background, and 20% of steps on two 77-token chunks as BREAK makes them
   (``--syntax-from-step``); 30% of the other captions taking the colour from the colour word's own token, so
   emphasis works (``--colour-token-from-step``, see ColourTokenSwap). Optionally a share of samples trains the
   sampler's first step from pure noise (see first_step_pairs; the gpu preset).
   ``--noise-schedule ztsnr`` (the ``ztsnr`` preset) trains with the fix of "Common Diffusion Noise Schedules and
   Sample Steps are Flawed" (Lin et al. 2023) from step 0: betas rescaled to zero terminal SNR and v-prediction (ε
   is undefined at SNR 0), min-SNR weights of the v loss with the image-space floor on every step (the last step,
   where the layout is decided, then still learns), no low-frequency noise (the paper: not needed at zero SNR) and
   no first-step pairs (the last training step already is pure noise). The export then carries the ``ztsnr`` and
   ``v_pred`` marker keys and a scheduler config with ``rescale_betas_zero_snr`` / ``v_prediction`` / trailing
   spacing, so the web UI samples it with zero terminal SNR by itself (modules.noise_schedule). Not yet run to the
   end (RESULTS.md): the shipped model is the ``cpu`` preset's.

The run ends with an export into ``--out``: ``config/`` (a diffusers config-only dir, what ships as
modules/configs/default-tiny), ``weights/`` (fp16 diffusers-format state dicts) and, when modules.ldm_convert is
there, ``default-tiny.safetensors`` in the original SD key layout. Logs go to ``--out/log.jsonl``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from modules import world
from modules.clip_tokenizer_files import write_tokenizer
from modules.paths import CONFIGS_DIR
from modules.training.common import min_snr_weights

MODEL_NAME = "default-tiny"
CONFIG_DIR = CONFIGS_DIR / MODEL_NAME
SD_METADATA = {"sd_config": MODEL_NAME}
VAE_FACTOR = 4  # AutoencoderKL with 3 levels halves the resolution twice
UNET_FACTOR = 4  # the UNet halves the latent twice more
MAX_TOKENS = 77
EVAL_CFG = 6.0
EVAL_STEPS = 20

BETA_START, BETA_END, TRAIN_TIMESTEPS = 0.00085, 0.012, 1000


def unet_config(resolution: int = world.IMAGE_SIZE) -> dict[str, Any]:
    """Three levels (32, 64, 128 channels; latent 16², 8², 4² at 64 px); attention on the two lower ones."""
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": resolution // VAE_FACTOR,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64, 128],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 128,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "use_linear_projection": False,
    }


def vae_config(scaling_factor: float = 1.0, resolution: int = world.IMAGE_SIZE) -> dict[str, Any]:
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "act_fn": "silu",
        "sample_size": resolution,
        "scaling_factor": scaling_factor,
        "force_upcast": True,
    }


def text_encoder_config() -> dict[str, Any]:
    """A small CLIP text encoder over the real CLIP vocabulary (49408 tokens, 77 positions)."""
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_TOKENS,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 128,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


def scheduler_config(zero_terminal_snr: bool = False) -> dict[str, Any]:
    """SD1.5's scheduler config (the noise schedule the model is trained with); with ``zero_terminal_snr`` the
    rescaled betas, v-prediction and trailing spacing it is trained and sampled with then."""
    if zero_terminal_snr:
        return {**scheduler_config(), "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                "timestep_spacing": "trailing", "steps_offset": 0}
    return {
        "_class_name": "PNDMScheduler",
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": TRAIN_TIMESTEPS,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "clip_sample": False,
        "trained_betas": None,
    }


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_config_dir(path: Path, scaling_factor: float, resolution: int = world.IMAGE_SIZE,
                     zero_terminal_snr: bool = False) -> None:
    """Write the diffusers config-only dir for the default model (what ships as modules/configs/default-tiny)."""
    _write_json(path / "model_index.json", MODEL_INDEX)
    _write_json(path / "unet" / "config.json", {"_diffusers_version": "0.42.1", **unet_config(resolution)})
    _write_json(path / "vae" / "config.json", {"_diffusers_version": "0.42.1", **vae_config(scaling_factor, resolution)})
    _write_json(path / "text_encoder" / "config.json", text_encoder_config())
    _write_json(path / "scheduler" / "scheduler_config.json", {"_diffusers_version": "0.42.1",
                                                                **scheduler_config(zero_terminal_snr)})
    shipped = CONFIG_DIR / "tokenizer"
    if path.resolve() != CONFIG_DIR.resolve() and (shipped / "vocab.json").exists():
        shutil.copytree(shipped, path / "tokenizer", dirs_exist_ok=True)  # no need for open-clip's BPE file
    else:
        write_tokenizer(path / "tokenizer")


def build_models(scaling_factor: float = 1.0, resolution: int = world.IMAGE_SIZE):
    """Fresh (randomly initialised) UNet, VAE and text encoder of the default model's architecture."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel.from_config(unet_config(resolution))
    vae = AutoencoderKL.from_config(vae_config(scaling_factor, resolution))
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config()))
    return unet, vae, text_encoder


def load_tokenizer():
    from transformers import CLIPTokenizer

    tok_dir = CONFIG_DIR / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        write_tokenizer(tok_dir)
    return CLIPTokenizer.from_pretrained(tok_dir)


# --------------------------------------------------------------------------------------------------- settings

STAGES = ("vae", "decoder", "unet")


@dataclass
class Settings:
    out: Path
    device: str = "auto"
    seed: int = 0
    resolution: int = world.IMAGE_SIZE
    dataset_size: int = 8192
    vae_steps: int = 4000
    vae_batch: int = 8
    vae_lr: float = 1e-3
    edge_weight: float = 1.0
    kl_weight: float = 1e-4
    anchor_weight: float = 0.5
    decoder_steps: int = 3000
    decoder_lr: float = 5e-4
    unet_steps: int = 8200
    unet_batch: int = 32
    unet_lr: float = 6e-4
    warmup_steps: int = 200
    empty_caption_prob: float = 0.1
    # Share of UNet steps conditioned on two 77-token chunks, as BREAK and long prompts are (see two_chunk_captions).
    break_prob: float = 0.2
    # Share of captions whose colour word is read from its own token only (see ColourTokenSwap).
    colour_token_prob: float = 0.3
    # Share of UNet samples that train the sampler's first step from pure noise (see first_step_pairs).
    first_step_share: float = 0.0
    # "sd": SD's schedule and ε-prediction (the shipped model); "ztsnr": zero terminal SNR and v-prediction.
    noise_schedule: str = "sd"
    snr_gamma: float = 5.0
    high_noise_weight: float = 0.1
    # Strength of the extra low-frequency noise (see low_frequency_noise).
    low_freq_noise: float = 0.3
    # The UNet step from which each addition joins. Shapes are learned fastest from the attribute captions with plain
    # min-SNR; the additions serve layout and prompt syntax and slow that down when on from the start (RESULTS.md).
    layout_from_step: int = 3000  # the low-frequency noise and the high-noise weight floor
    syntax_from_step: int = 4700  # object-only / background-only captions (AND) and two-chunk captions (BREAK)
    colour_token_from_step: int = 6700  # the colour-token swap (emphasis)
    ema_decay: float = 0.999
    log_every: int = 50
    eval_every: int = 500
    eval_images: int = 16
    checkpoint_every: int = 250
    workers: int = 1
    threads: int = 0
    stages: str = ",".join(STAGES)


PRESETS: dict[str, dict[str, Any]] = {
    # 73 min on a quiet 2-core machine (both cores; the default --threads); the shipped model is this preset's output
    # (benchmarks/RESULTS.md).
    "cpu": {},
    # A larger run for one CUDA GPU (same architecture; not yet run: no GPU was available when the model shipped).
    "gpu": dict(first_step_share=0.15, dataset_size=60000, vae_steps=6000, vae_batch=64, decoder_steps=4000,
                unet_steps=24000, unet_batch=256, layout_from_step=8800, syntax_from_step=13800,
                colour_token_from_step=19600, unet_lr=5e-4, warmup_steps=500, log_every=200, eval_every=4000,
                eval_images=96, checkpoint_every=2000, ema_decay=0.9995, workers=12),
    # The cpu preset with zero terminal SNR and v-prediction from step 0 (modules.noise_schedule); not yet run to the
    # end. Low-frequency noise is off: at zero SNR the last step is pure noise, as the sampler's first input is.
    "ztsnr": dict(noise_schedule="ztsnr", low_freq_noise=0.0),
    # Checks that the script runs end to end (seconds).
    "smoke": dict(dataset_size=256, vae_steps=20, vae_batch=8, decoder_steps=10, unet_steps=20, unet_batch=8,
                  warmup_steps=5, layout_from_step=5, syntax_from_step=10, colour_token_from_step=15, log_every=5,
                  eval_every=20, eval_images=4, checkpoint_every=10),
}


NOISE_SCHEDULES = ("sd", "ztsnr")
ZTSNR_MARKERS = ("ztsnr", "v_pred")  # state-dict keys that tell loaders (ComfyUI, reForge, this app) how to sample


class SettingsError(ValueError):
    """Settings that cannot work; the message says which and why."""


def validate(s: Settings) -> None:
    for name in ("vae_steps", "decoder_steps", "unet_steps", "vae_batch", "unet_batch", "dataset_size", "log_every",
                 "eval_every", "checkpoint_every"):
        if getattr(s, name) < 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(s, name)})")
    for name in ("layout_from_step", "syntax_from_step", "colour_token_from_step"):
        if getattr(s, name) < 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be 0 (from the start) or more "
                                f"(got {getattr(s, name)})")
    factor = VAE_FACTOR * UNET_FACTOR
    if s.resolution % factor:
        raise SettingsError(f"--resolution {s.resolution} is not divisible by {factor} (the VAE's factor {VAE_FACTOR} "
                            f"times the UNet's {UNET_FACTOR}); try {max(factor, round(s.resolution / factor) * factor)}")
    unknown = set(s.stages.split(",")) - set(STAGES)
    if unknown:
        raise SettingsError(f"--stages: unknown {', '.join(sorted(unknown))}; use a comma list of {', '.join(STAGES)}")
    shares = ("empty_caption_prob", "ema_decay", "break_prob", "colour_token_prob", "first_step_share")
    if not all(0 <= getattr(s, name) < 1 for name in shares):
        raise SettingsError(", ".join(f"--{n.replace('_', '-')}" for n in shares) + " must be in [0, 1)")
    if s.noise_schedule not in NOISE_SCHEDULES:
        raise SettingsError(f"--noise-schedule {s.noise_schedule!r}: use {' or '.join(NOISE_SCHEDULES)}")
    if s.noise_schedule == "ztsnr" and s.first_step_share:
        raise SettingsError("--first-step-share is for SD's schedule: with --noise-schedule ztsnr the last training "
                            "step already is pure noise; leave it at 0")
    if s.device not in ("auto", "cpu") and not s.device.startswith("cuda"):
        raise SettingsError(f"--device {s.device!r}: use auto, cpu or cuda[:N]")
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"--device {s.device}: CUDA is not available here (use --device auto or cpu)")
    try:
        s.out.mkdir(parents=True, exist_ok=True)
        probe = s.out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SettingsError(f"--out {s.out}: cannot write there ({e.strerror or e})") from e


def additions_at(s: Settings, step: int) -> list[str]:
    """The UNet's additions on at `step`: "layout", "syntax", "colour_token" (see the *_from_step settings)."""
    starts = {"layout": s.layout_from_step, "syntax": s.syntax_from_step, "colour_token": s.colour_token_from_step}
    return [name for name, start in starts.items() if step >= start]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------------- data

def scene_for(seed: int, index: int) -> world.Scene:
    """Scene number `index` of the dataset with seed `seed` (independent of any other index)."""
    return world.sample_scene(random.Random(seed * 1_000_003 + index))


def _render_range(args: tuple[int, int, int, int]) -> np.ndarray:
    seed, start, stop, resolution = args
    return np.stack([np.asarray(world.render(scene_for(seed, i), resolution)) for i in range(start, stop)])


def render_images(seed: int, count: int, resolution: int, workers: int) -> torch.Tensor:
    """uint8 [count, 3, H, W] images of scenes 0..count-1, rendered in `workers` processes."""
    chunk = 1024
    jobs = [(seed, a, min(a + chunk, count), resolution) for a in range(0, count, chunk)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    else:
        parts = [_render_range(j) for j in jobs]
    return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()


@dataclass
class Captions:
    """Token ids of every template's caption for every scene, via a table of the unique captions."""

    table: torch.Tensor  # int64 [U, 77]
    index: torch.Tensor  # int64 [N, len(TEMPLATES)] rows of `table`
    empty: torch.Tensor  # int64 [77], the empty caption

    def to(self, device: torch.device) -> "Captions":
        return Captions(self.table.to(device), self.index.to(device), self.empty.to(device))


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def build_captions(tokenizer, seed: int, count: int) -> Captions:
    unique: dict[str, int] = {}
    index = [[unique.setdefault(world.caption(scene_for(seed, i), template=t), len(unique))
              for t in range(len(world.TEMPLATES))] for i in range(count)]
    return Captions(tokenize(tokenizer, list(unique)), torch.tensor(index), tokenize(tokenizer, [""])[0])


def two_chunk_captions(ids: torch.Tensor, empty: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``[B, 77]`` captions -> ``[B, 2, 77]``, the way the web UI conditions on a prompt of two chunks.

    Half the captions are cut at a random token into two chunks, each wrapped in its own BOS/EOS (what ``BREAK`` and
    prompts over 75 tokens do); the others keep their one chunk and get the empty prompt's as the second (how a
    shorter prompt is padded to the length of a longer negative prompt). Empty captions become two empty chunks.
    """
    b, length = ids.shape
    bos, eos = int(empty[0]), int(empty[1])  # the empty caption is [BOS, EOS, pad...]
    pad = int(empty[-1])
    n = (ids == eos).int().argmax(dim=1) - 1  # tokens between BOS and EOS
    cut = 1 + (torch.rand(b, device=ids.device, generator=g) * (n - 1).clamp(min=1)).long()  # 1 ≤ cut < n
    split = (torch.rand(b, device=ids.device, generator=g) < 0.5) & (n >= 2)
    j = torch.arange(length, device=ids.device)[None]
    first = torch.where(j <= cut[:, None], ids, torch.where(j == cut[:, None] + 1, eos, pad))
    rest = n[:, None] - cut[:, None]  # tokens in the second chunk
    shifted = ids.gather(1, (j + cut[:, None]).clamp(max=length - 1))
    second = torch.where(j == 0, bos, torch.where(j <= rest, shifted, torch.where(j == rest + 1, eos, pad)))
    first = torch.where(split[:, None], first, ids)
    second = torch.where(split[:, None], second, empty[None].expand(b, -1))
    return torch.stack([first, second], dim=1)


class ColourTokenSwap:
    """Teaches the UNet to take the object's colour from the colour word's own token, so that emphasis works.

    A1111 emphasis, ``(red:1.5)``, scales the hidden state of the token ``red`` only. The text encoder is causal, so
    every later token (and the padding) also carries "red", and a small model learns to read the colour from those
    summaries, where emphasis cannot reach. For a share of captions this builds the conditioning from the same
    caption with another colour, except at the colour word's position, which keeps the true caption's hidden
    state; the image has the true colour, so only that token predicts it.
    """

    def __init__(self, tokenizer, seed: int) -> None:
        self.tokenizer, self.seed = tokenizer, seed
        ids = {c: tokenizer(c, add_special_tokens=False).input_ids for c in world.COLORS}
        self.token = {c: i[0] for c, i in ids.items() if len(i) == 1}  # colours that are one token

    def pick(self, idx: torch.Tensor, templates: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
             g: torch.Generator) -> tuple[list[int], torch.Tensor, list[int]] | None:
        """(rows, swapped caption ids [R, 77], colour positions) for the chosen batch rows, or None. `ids` are the
        batch's true caption ids."""
        chosen, captions, positions = [], [], []
        for row in rows.tolist():
            scene, template = scene_for(self.seed, int(idx[row])), int(templates[row])
            if template == world.PARTIAL_TEMPLATES[1] or scene.color not in self.token:
                continue
            others = [c for c in self.token if c not in (scene.color, scene.background)]
            other = others[int(torch.randint(len(others), (1,), device=g.device, generator=g))]
            chosen.append(row)
            positions.append(int((ids[row] == self.token[scene.color]).nonzero()[0]))
            captions.append(world.caption(replace(scene, color=other), template=template))
        return (chosen, tokenize(self.tokenizer, captions), positions) if chosen else None

    @staticmethod
    def apply(context: torch.Tensor, swapped_context: torch.Tensor, rows: list[int], positions: list[int]) -> torch.Tensor:
        mixed = context.clone()
        for k, (row, pos) in enumerate(zip(rows, positions)):
            mixed[row] = swapped_context[k]
            mixed[row, pos] = context[row, pos]
        return mixed


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1.0


def step_generator(device: torch.device, seed: int, stage: int, step: int) -> torch.Generator:
    """The generator for one training step: batches, noise and dropout depend only on (seed, stage, step)."""
    return torch.Generator(device).manual_seed((seed * 1_000_003 + stage) * 10_000_019 + step)


# ------------------------------------------------------------------------------------------------ training

class Logger:
    """Appends JSON lines to log.jsonl and echoes evaluations below the progress bar."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, bar: tqdm | None = None, **entry: Any) -> None:
        entry = {"time": round(time.time(), 1), **entry}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if "eval" in entry.get("kind", ""):
            (bar.write if bar is not None else print)(json.dumps(entry))


RESUME_KEYS = ("seed", "resolution", "dataset_size")  # what a checkpoint's data and models depend on


def load_checkpoint(path: Path, s: Settings, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None; refuses one made with different data or model settings."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    saved = state.get("settings", {})
    changed = [f"--{k.replace('_', '-')} {saved[k]} -> {getattr(s, k)}" for k in RESUME_KEYS if k in saved and saved[k] != getattr(s, k)]
    if changed:
        raise SettingsError(f"{path} was made with other settings ({'; '.join(changed)}): use another --out")
    return state


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """VAE: linear warm-up, then cosine down to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def constant_lr(step: int, warmup: int) -> float:
    """UNet: linear warm-up, then constant (the EMA anneals), so a finished run can be continued with more steps."""
    return min(1.0, (step + 1) / warmup)


class Interrupted(Exception):
    """Training stopped on request, after writing a checkpoint at the last finished step."""


class StopRequest:
    """Ctrl-C or SIGTERM: finish the step in progress, checkpoint, stop. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


STOP = StopRequest()


def due(step: int, every: int, total: int) -> bool:
    """Whether a periodic action (log, eval) falls on `step`: every `every` steps and on the last one."""
    return step % every == 0 or step == total


def save_or_stop(step: int, total: int, every: int, checkpoint, stage: str) -> None:
    """End of a training step: save every `every` steps (the caller saves after the last one), and on a stop
    request save and raise Interrupted."""
    if step % every == 0 and step < total:
        checkpoint()
    if STOP.requested:
        checkpoint()
        raise Interrupted(f"{stage} step {step}")


def first_step_pairs(latents: torch.Tensor, alphas_cumprod: torch.Tensor, device: torch.device,
                     g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input, target, weight) that train the sampler's first step, where only the prompt can set the layout.

    SD's schedule keeps √ᾱ = 6.8% of the image at t=999. Trained only on x = √ᾱ·x0 + √(1−ᾱ)·ε, a model at 64 px
    reads the layout from that remnant and never learns it from the prompt; at inference the sampler starts from
    noise that holds no image, so the model reads a layout out of the noise (the same seed put the shape in the
    same place whatever the prompt said). Here the input is pure noise, as the sampler's first step gets it, and the
    target is the ε for which the sampler's estimate (x − √(1−ᾱ)·ε)/√ᾱ is the training image. The weight makes the
    loss the plain MSE of that image estimate. Same schedule, same parametrization.
    """
    ab = alphas_cumprod[-1]
    start = torch.randn(latents.shape, device=device, generator=g)
    return start, (start - ab.sqrt() * latents) / (1 - ab).sqrt(), (1 - ab) / ab


LOW_FREQ_SIZES = (1, 2, 4, 8)  # a per-channel offset, then ever finer coarse patterns, upsampled to the latent


def low_frequency_noise(shape: torch.Size, strength: float, device: torch.device, g: torch.Generator) -> torch.Tensor:
    """Offset / pyramid noise added to the training noise.

    SD's schedule keeps 6.8% of the signal at t=999. On a 16×16 latent of flat colours that is enough to read the
    background (the per-channel mean) and the object's place (coarse blobs) from the noisy input, so a model trained
    on plain noise takes both from the starting noise instead of from the prompt. Extra noise at those coarse scales
    hides them, which makes the prompt the only reliable source.
    """
    b, c, h, w = shape
    total = torch.zeros(shape, device=device)
    for size in LOW_FREQ_SIZES:
        coarse = torch.randn((b, c, size, size), device=device, generator=g)
        total += coarse if size == 1 else F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return strength * total


def edge_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical image gradients: penalises blurred edges."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(recon), dx(target)) + F.l1_loss(dy(recon), dy(target))


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


@torch.no_grad()
def attribute_accuracy(images: np.ndarray, scenes: list[world.Scene]) -> dict[str, float]:
    """Share of images in which the analyser reads each attribute of its scene back."""
    from modules.analyser import analyse

    hits = {k: 0 for k in ("color", "background", "shape", "position", "size")}
    for image, scene in zip(images, scenes):
        read = analyse(image).as_dict()
        for k in hits:
            hits[k] += read[k] == getattr(scene, k)
    return {k: round(v / len(scenes), 4) for k, v in hits.items()}


def train_vae(s: Settings, device: torch.device, images: torch.Tensor, eval_images: torch.Tensor, log: Logger):
    """Stage 1. Returns the trained VAE (eval mode, on `device`, its config holding the latent scaling factor)."""
    ckpt_path = s.out / "vae.ckpt"
    torch.manual_seed(s.seed)
    _, vae, _ = build_models(resolution=s.resolution)
    vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    step, scaling_factor = 0, None
    state = load_checkpoint(ckpt_path, s, device)
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, scaling_factor = state["step"], state.get("scaling_factor")
        if step >= s.vae_steps and scaling_factor is not None:
            print(f"VAE: finished earlier ({step} steps), reusing {ckpt_path}")
            vae.register_to_config(scaling_factor=scaling_factor)
            return vae.eval().requires_grad_(False)
        print(f"VAE: resuming at step {step} of {s.vae_steps}")
    if "vae" not in s.stages.split(","):
        raise SettingsError(f"the VAE is not trained yet ({step} of {s.vae_steps} steps): add vae to --stages")

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                    "scaling_factor": scaling_factor, "settings": _settings_dict(s)})

    vae.train()
    bar = tqdm(total=s.vae_steps, initial=step, desc="VAE", dynamic_ncols=True)
    try:
        while step < s.vae_steps:
            g = step_generator(device, s.seed, 1, step)
            idx = torch.randint(0, images.shape[0], (s.vae_batch,), device=device, generator=g)
            x = to_model_range(images[idx])
            for group in opt.param_groups:
                group["lr"] = s.vae_lr * cosine_lr(step, s.vae_steps, min(s.warmup_steps, s.vae_steps // 10))
            with autocast(device):
                posterior = vae.encode(x).latent_dist
                z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, device=device, generator=g)
                recon = vae.decode(z).sample.float()
            rec = F.l1_loss(recon, x)
            edges = edge_loss(recon, x)
            mean, logvar = posterior.mean.float(), posterior.logvar.float()
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()  # per latent element
            anchor = F.l1_loss(mean[:, :3], F.avg_pool2d(x, VAE_FACTOR))
            loss = rec + s.edge_weight * edges + s.kl_weight * kl + s.anchor_weight * anchor
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if due(step, s.log_every, s.vae_steps):
                bar.set_postfix(l1=f"{rec.item():.4f}", kl=f"{kl.item():.2f}")
                log(stage="vae", kind="train", step=step, l1=rec.item(), edge=edges.item(), kl=kl.item(),
                    anchor=anchor.item(), lr=opt.param_groups[0]["lr"])
            if due(step, s.eval_every, s.vae_steps):
                log(bar, stage="vae", kind="eval", step=step, **evaluate_vae(vae, eval_images, s.seed))
                vae.train()
            save_or_stop(step, s.vae_steps, s.checkpoint_every, checkpoint, "VAE")
    finally:
        bar.close()
    vae.eval().requires_grad_(False)
    scaling_factor = latent_scaling_factor(vae, images)
    vae.register_to_config(scaling_factor=scaling_factor)
    log(stage="vae", kind="scaling_factor", step=step, scaling_factor=scaling_factor)
    checkpoint()
    return vae


def _decoder_state(vae) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}


def train_decoder(s: Settings, device: torch.device, vae, images: torch.Tensor, eval_images: torch.Tensor, log: Logger):
    """Stage 2: fine-tune the decoder alone on the frozen encoder's latents (sharper shapes, same latent space).

    Needs the finished VAE only, so it can also run beside the UNet stage (``--stages decoder`` in one process,
    ``--stages unet`` in another). Without ``decoder`` in ``--stages`` this only loads what it has trained so far.
    """
    ckpt_path = s.out / "decoder.ckpt"
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=s.decoder_lr, weight_decay=0.0)
    step = 0
    state = load_checkpoint(ckpt_path, s, device)
    if state is not None:
        vae.load_state_dict(state["decoder"], strict=False)
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    if step >= s.decoder_steps or "decoder" not in s.stages.split(","):
        print(f"decoder: using the one fine-tuned for {step} of {s.decoder_steps} steps")
        return vae
    if step:
        print(f"decoder: resuming at step {step} of {s.decoder_steps}")

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"decoder": _decoder_state(vae), "optimizer": opt.state_dict(), "step": step,
                                    "settings": _settings_dict(s)})

    latent_mean, latent_std = encode_latents(vae, images)
    vae.decoder.train().requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    bar = tqdm(total=s.decoder_steps, initial=step, desc="decoder", dynamic_ncols=True)
    try:
        while step < s.decoder_steps:
            g = step_generator(device, s.seed, 3, step)
            idx = torch.randint(0, images.shape[0], (s.vae_batch,), device=device, generator=g)
            x = to_model_range(images[idx])
            z = latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, device=device, generator=g)
            for group in opt.param_groups:
                group["lr"] = s.decoder_lr * cosine_lr(step, s.decoder_steps, min(s.warmup_steps, s.decoder_steps // 10))
            with autocast(device):
                recon = vae.decode(z).sample.float()
            rec, edges = F.l1_loss(recon, x), edge_loss(recon, x)
            loss = rec + s.edge_weight * edges
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if due(step, s.log_every, s.decoder_steps):
                bar.set_postfix(l1=f"{rec.item():.4f}")
                log(stage="decoder", kind="train", step=step, l1=rec.item(), edge=edges.item(), lr=opt.param_groups[0]["lr"])
            if due(step, s.eval_every, s.decoder_steps):
                log(bar, stage="decoder", kind="eval", step=step, **evaluate_vae(vae, eval_images, s.seed))
                vae.decoder.train()
            save_or_stop(step, s.decoder_steps, s.checkpoint_every, checkpoint, "decoder")
    finally:
        bar.close()
    checkpoint()
    vae.eval().requires_grad_(False)
    return vae


@torch.no_grad()
def evaluate_vae(vae, eval_images: torch.Tensor, seed: int) -> dict[str, float]:
    """Held-out L1 and PSNR of reconstructions, and how often the analyser reads them as their scene."""
    vae.eval()
    x = to_model_range(eval_images)
    recon = torch.cat([vae.decode(vae.encode(b).latent_dist.mode()).sample for b in x.split(64)]).clamp(-1, 1)
    mse = F.mse_loss((recon + 1) / 2, (x + 1) / 2).item()
    as_uint8 = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    scenes = [scene_for(seed + 1, i) for i in range(len(eval_images))]
    acc = attribute_accuracy(as_uint8, scenes)
    return {"l1": F.l1_loss(recon, x).item(), "psnr": round(-10 * math.log10(max(mse, 1e-10)), 2),
            **{f"recon_{k}": v for k, v in acc.items()}}


@torch.no_grad()
def latent_scaling_factor(vae, images: torch.Tensor) -> float:
    """1 / std of the latents (as SD's 0.18215), rounded so the shipped config reads cleanly."""
    x = to_model_range(images[:2048])
    z = torch.cat([vae.encode(b).latent_dist.mode() for b in x.split(256)])
    return round(1.0 / z.float().std().item(), 4)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (the UNet stage samples from them each step)."""
    means, stds = [], []
    for b in images.split(512):
        dist = vae.encode(to_model_range(b)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def make_pipeline(unet, vae, text_encoder, tokenizer, zero_terminal_snr: bool = False):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=eval_scheduler(zero_terminal_snr=zero_terminal_snr), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


EVAL_SAMPLERS = ("DPM++ 2M Karras", "Euler a")


def eval_scheduler(name: str = "DPM++ 2M Karras", zero_terminal_snr: bool = False):
    """A plain diffusers scheduler for A1111's "DPM++ 2M Karras" or "Euler a" on the model's noise schedule (with
    ``zero_terminal_snr``: the rescaled betas, v-prediction, Euler a with trailing spacing, as the web UI samples).

    Every value is passed explicitly: ``from_config`` would silently drop the ones that were defaults.
    """
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    schedule = dict(beta_start=BETA_START, beta_end=BETA_END, beta_schedule="scaled_linear",
                    num_train_timesteps=TRAIN_TIMESTEPS, prediction_type="epsilon", timestep_spacing="linspace",
                    steps_offset=1)
    if zero_terminal_snr:
        schedule.update(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                        timestep_spacing="linspace" if name == "DPM++ 2M Karras" else "trailing", steps_offset=0)
    if name == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", solver_order=2,
                                           use_karras_sigmas=True, final_sigmas_type="zero")
    if name == "Euler a":
        return EulerAncestralDiscreteScheduler(**schedule)
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(EVAL_SAMPLERS)}")


@torch.no_grad()
def evaluate_unet(pipe, seed: int, count: int, device: torch.device) -> dict[str, float]:
    """Draw `count` held-out full-caption scenes (DPM++ 2M Karras, 20 steps, CFG 6) and score them."""
    scenes = [scene_for(seed + 2, i) for i in range(count)]
    prompts = [world.caption(sc) for sc in scenes]
    images = []
    for start in range(0, count, 32):
        gens = [torch.Generator(device).manual_seed(1000 + i) for i in range(start, min(start + 32, count))]
        out = pipe(prompts[start:start + 32], num_inference_steps=EVAL_STEPS, guidance_scale=EVAL_CFG,
                   generator=gens, output_type="np").images
        images.append((out * 255).round().astype(np.uint8))
    return {f"gen_{k}": v for k, v in attribute_accuracy(np.concatenate(images), scenes).items()}


def train_unet(s: Settings, device: torch.device, vae, images: torch.Tensor,
               captions: Captions, eval_images: torch.Tensor, eval_captions: Captions, tokenizer, log: Logger):
    """Stage 3. Returns the EMA UNet and text encoder (eval mode, on `device`)."""
    from diffusers import DDPMScheduler

    ckpt_path = s.out / "unet.ckpt"
    torch.manual_seed(s.seed + 1)
    unet, _, text_encoder = build_models(resolution=s.resolution)
    unet.to(device).train()
    text_encoder.to(device).train()
    ema_unet, ema_te = copy.deepcopy(unet).eval().requires_grad_(False), copy.deepcopy(text_encoder).eval().requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema_params = list(ema_unet.parameters()) + list(ema_te.parameters())
    opt = torch.optim.AdamW(params, lr=s.unet_lr, weight_decay=0.01)
    step = 0
    state = load_checkpoint(ckpt_path, s, device)
    if state is not None:
        for module, key in ((unet, "unet"), (text_encoder, "text_encoder"), (ema_unet, "ema_unet"), (ema_te, "ema_text_encoder")):
            module.load_state_dict(state[key])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        if step >= s.unet_steps:
            print(f"UNet: finished earlier ({step} steps), reusing {ckpt_path}")
            return ema_unet, ema_te
        print(f"UNet: resuming at step {step} of {s.unet_steps}")

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                                    "ema_unet": ema_unet.state_dict(), "ema_text_encoder": ema_te.state_dict(),
                                    "optimizer": opt.state_dict(), "step": step, "settings": _settings_dict(s)})

    ztsnr = s.noise_schedule == "ztsnr"
    noise_scheduler = DDPMScheduler(beta_start=BETA_START, beta_end=BETA_END, beta_schedule="scaled_linear",
                                    num_train_timesteps=TRAIN_TIMESTEPS, rescale_betas_zero_snr=ztsnr,
                                    prediction_type="v_prediction" if ztsnr else "epsilon")
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # The ε loss weighs an error in the predicted image by the SNR, nearly nothing at the highest noise levels where
    # the layout is decided: min-SNR-γ with the image-space weight kept at least --high-noise-weight. With zero
    # terminal SNR (v loss) the floor holds from step 0: at SNR 0 min-SNR alone would give the last step weight 0.
    plain_loss_weight = min_snr_weights(snr, s.snr_gamma, v_prediction=ztsnr,
                                        floor=s.high_noise_weight if ztsnr else 0.0)
    layout_loss_weight = min_snr_weights(snr, s.snr_gamma, v_prediction=ztsnr, floor=s.high_noise_weight)
    latent_mean, latent_std = encode_latents(vae, images)
    scaling_factor = vae.config.scaling_factor
    eval_batch = _fixed_eval_batch(vae, eval_images, eval_captions, s.seed, device, noise_scheduler)
    pipe = make_pipeline(ema_unet, vae, ema_te, tokenizer, zero_terminal_snr=ztsnr)
    # The full caption (every attribute named) is drawn most often; the others teach attributes alone, and the
    # object-only / background-only ones (for AND) least, because they name no position.
    colour_swap = ColourTokenSwap(tokenizer, s.seed)
    template_weights = torch.tensor([2.5 if t == world.FULL_TEMPLATE else 0.5 if t in world.PARTIAL_TEMPLATES else 1.0
                                     for t in range(len(world.TEMPLATES))], device=device)
    attribute_template_weights = torch.tensor([0.0 if t in world.PARTIAL_TEMPLATES else float(w)
                                               for t, w in enumerate(template_weights)], device=device)

    def unet_loss(model, te, noisy, ids, t, target, weights=None, swap=None) -> torch.Tensor:
        """`ids` is [B, 77], or [B, K, 77] for K chunks whose hidden states are concatenated (as the web UI does);
        `swap` is what ColourTokenSwap.pick returned."""
        with autocast(device):
            context = te(ids.reshape(-1, ids.shape[-1]))[0]
            if swap is not None:
                rows, swapped_ids, positions = swap
                context = ColourTokenSwap.apply(context, te(swapped_ids.to(device))[0], rows, positions)
            pred = model(noisy, t, context.reshape(ids.shape[0], -1, context.shape[-1])).sample.float()
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * (weights if weights is not None else 1)).mean()

    bar = tqdm(total=s.unet_steps, initial=step, desc="UNet+TE", dynamic_ncols=True)
    try:
        while step < s.unet_steps:
            g = step_generator(device, s.seed, 2, step)
            additions = additions_at(s, step)
            layout, syntax = "layout" in additions, "syntax" in additions
            idx = torch.randint(0, latent_mean.shape[0], (s.unet_batch,), device=device, generator=g)
            latents = (latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, device=device, generator=g)) * scaling_factor
            templates = torch.multinomial(template_weights if syntax else attribute_template_weights, s.unet_batch,
                                          replacement=True, generator=g)
            ids = captions.table[captions.index[idx, templates]]
            drop = torch.rand(s.unet_batch, device=device, generator=g) < s.empty_caption_prob
            ids = torch.where(drop[:, None], captions.empty[None], ids)
            swap = None
            if syntax and torch.rand(1, device=device, generator=g).item() < s.break_prob:
                ids = two_chunk_captions(ids, captions.empty, g)
            elif s.colour_token_prob and "colour_token" in additions:
                rows = ((torch.rand(s.unet_batch, device=device, generator=g) < s.colour_token_prob) & ~drop).nonzero()[:, 0]
                swap = colour_swap.pick(idx, templates, ids, rows, g)
            noise = torch.randn(latents.shape, device=device, generator=g)
            if layout and s.low_freq_noise:
                noise = noise + low_frequency_noise(latents.shape, s.low_freq_noise, device, g)
            t = torch.randint(0, TRAIN_TIMESTEPS, (s.unet_batch,), device=device, generator=g)
            noisy, target, weights = noise_scheduler.add_noise(latents, noise, t), \
                noise_scheduler.get_velocity(latents, noise, t) if ztsnr else noise, \
                (layout_loss_weight if layout else plain_loss_weight)[t]
            if s.first_step_share:
                first = torch.rand(s.unet_batch, device=device, generator=g) < s.first_step_share
                start, first_target, first_weight = first_step_pairs(latents, alphas_cumprod, device, g)
                t = torch.where(first, TRAIN_TIMESTEPS - 1, t)
                noisy = torch.where(first[:, None, None, None], start, noisy)
                target = torch.where(first[:, None, None, None], first_target, target)
                weights = torch.where(first, first_weight, weights)
            for group in opt.param_groups:
                group["lr"] = s.unet_lr * constant_lr(step, s.warmup_steps)
            loss = unet_loss(unet, text_encoder, noisy, ids, t, target, weights, swap)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay = min(s.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
            step += 1
            bar.update(1)
            if due(step, s.log_every, s.unet_steps):
                bar.set_postfix(loss=f"{loss.item():.4f}")
                log(stage="unet", kind="train", step=step, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                    additions=additions)
            if due(step, s.eval_every, s.unet_steps):
                with torch.no_grad():
                    eval_loss = unet_loss(ema_unet, ema_te, *eval_batch).item()
                    shuffled = unet_loss(ema_unet, ema_te, eval_batch[0], eval_batch[1].roll(1, 0), *eval_batch[2:]).item()
                log(bar, stage="unet", kind="eval", step=step, eval_loss=round(eval_loss, 5),
                    eval_loss_wrong_caption=round(shuffled, 5), **evaluate_unet(pipe, s.seed, s.eval_images, device))
            save_or_stop(step, s.unet_steps, s.checkpoint_every, checkpoint, "UNet")
    finally:
        bar.close()
    checkpoint()
    return ema_unet, ema_te


@torch.no_grad()
def _fixed_eval_batch(vae, eval_images: torch.Tensor, eval_captions: Captions, seed: int,
                      device: torch.device, noise_scheduler) -> tuple[torch.Tensor, ...]:
    """Held-out noisy latents, full captions, timesteps and noise, fixed for the whole run (a comparable eval loss)."""
    g = torch.Generator(device).manual_seed(seed + 3)
    latents = vae.encode(to_model_range(eval_images[:256])).latent_dist.mode() * vae.config.scaling_factor
    ids = eval_captions.table[eval_captions.index[: latents.shape[0], world.FULL_TEMPLATE]]
    t = torch.randint(0, TRAIN_TIMESTEPS, (latents.shape[0],), device=device, generator=g)
    noise = torch.randn(latents.shape, device=device, generator=g)
    target = noise_scheduler.get_velocity(latents, noise, t) if noise_scheduler.config.prediction_type == "v_prediction" \
        else noise
    return noise_scheduler.add_noise(latents, noise, t), ids, t, target


# -------------------------------------------------------------------------------------------------- export

def _fp16_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export(out: Path, unet, vae, text_encoder, zero_terminal_snr: bool = False) -> Path | None:
    """Write config/, weights/ and (when modules.ldm_convert exists) the single-file LDM checkpoint into `out`; with
    ``zero_terminal_snr`` the config's scheduler and the file's ``ztsnr`` / ``v_pred`` marker keys say so."""
    write_config_dir(out / "config", vae.config.scaling_factor, vae.config.sample_size, zero_terminal_snr)
    weights = out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        save_file(_fp16_state(module), weights / f"{name}.safetensors")
    try:
        from modules.ldm_convert import diffusers_to_ldm
    except ImportError:
        print("modules.ldm_convert is not there yet: exported diffusers-format weights only, to", weights)
        return None
    state = diffusers_to_ldm(*load_exported(out), family="sd1")
    if zero_terminal_snr:
        state.update({key: torch.tensor([]) for key in ZTSNR_MARKERS})
    path = out / f"{MODEL_NAME}.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, path, metadata=SD_METADATA)
    (out / f"{MODEL_NAME}.safetensors.sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def load_exported(out: Path):
    """UNet, VAE and text encoder (fp32, eval) rebuilt from an export's config/ and weights/."""
    vae_cfg = json.loads((out / "config" / "vae" / "config.json").read_text())
    unet, vae, text_encoder = build_models(vae_cfg["scaling_factor"], vae_cfg["sample_size"])
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.load_state_dict({k: v.float() for k, v in load_file(out / "weights" / f"{name}.safetensors").items()})
        module.eval().requires_grad_(False)
    return unet, vae, text_encoder


# ---------------------------------------------------------------------------------------------------- main

def _settings_dict(s: Settings) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}


def run(s: Settings) -> Path | None:
    validate(s)
    device = pick_device(s.device)
    if s.threads:
        torch.set_num_threads(s.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log = Logger(s.out / "log.jsonl")
    log(kind="start", device=str(device), settings=_settings_dict(s))
    print(f"training the default model on {device} into {s.out}")

    t0 = time.time()
    images = render_images(s.seed, s.dataset_size, s.resolution, s.workers).to(device)
    eval_images = render_images(s.seed + 1, 256, s.resolution, s.workers).to(device)
    tokenizer = load_tokenizer()
    captions = build_captions(tokenizer, s.seed, s.dataset_size).to(device)
    eval_captions = build_captions(tokenizer, s.seed + 1, 256).to(device)
    log(kind="data", seconds=round(time.time() - t0, 1), images=s.dataset_size, unique_captions=len(captions.table))

    vae = train_vae(s, device, images, eval_images, log)
    vae = train_decoder(s, device, vae, images, eval_images, log)
    if "unet" not in s.stages.split(","):
        return None
    unet, text_encoder = train_unet(s, device, vae, images, captions, eval_images, eval_captions,
                                    tokenizer, log)
    log(kind="done", seconds=round(time.time() - t0, 1))
    return export(s.out, unet, vae, text_encoder, zero_terminal_snr=s.noise_schedule == "ztsnr")


def parse_args(argv: list[str] | None = None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(prog="python -m modules.train_default_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu: the shipped model, 73 min on 2 quiet cores; ztsnr: cpu with zero terminal SNR and "
                             "v-prediction; gpu: a larger run for a GPU; smoke: seconds")
    parser.add_argument("--export-only", action="store_true",
                        help="only redo the export from --out/weights (e.g. weights trained elsewhere)")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        kind = Path if f.name == "out" else type(f.default)
        parser.add_argument(flag, type=kind, required=f.name == "out", default=None,
                            help=None if f.name == "out" else f"default {f.default} (before the preset)")
    args = parser.parse_args(argv)
    values = {f.name: f.default for f in fields(Settings) if f.name != "out"}
    values.update(PRESETS[args.preset])
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    return Settings(out=args.out, **values), args.export_only


def main(argv: list[str] | None = None) -> int:
    settings, export_only = parse_args(argv)
    STOP.install()
    try:
        if export_only:
            export(settings.out, *load_exported(settings.out), zero_terminal_snr=settings.noise_schedule == "ztsnr")
        else:
            run(settings)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"\nstopped after {e}; it is saved in {settings.out}. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\nstopped; the last checkpoint in {settings.out} is kept. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
