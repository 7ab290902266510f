"""The position toy of benchmarks/RESULTS.md, with the zero-terminal-SNR recipe beside SD's.

One large blob on 16×16 latents at one of five places, captions "a shape {position}", a small UNet and text encoder
trained from scratch for the same number of steps under two recipes:

- ``epsilon``: SD's schedule (scaled-linear betas 0.00085→0.012, √ᾱ_T ≈ 0.068) and ε-prediction, sampled with the
  app's default DPM++ 2M (Karras);
- ``ztsnr``: the betas rescaled to zero terminal SNR, v-prediction, sampled by the app's zero-terminal-SNR schedulers
  (``sd_samplers.create_scheduler(..., zero_terminal_snr=True)``: trailing spacing, from SNR ≈ 0).

With SD's schedule the noisiest training input still shows where the blob is, so ε-prediction learns to read the
layout from the noise and, at inference, reads it from the sampler's pure noise: position follows the seed. At zero
terminal SNR there is nothing to read at the last step; only the caption tells where the blob goes.
``position_accuracy`` samples every position with several seeds (CFG, the app's schedulers) and reads the blob's
place back from the latent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

POSITIONS = {  # caption word -> blob centre (row, column) on the 16×16 latent
    "on the left": (7.5, 3.5), "on the right": (7.5, 11.5), "at the top": (3.5, 7.5),
    "at the bottom": (11.5, 7.5), "in the center": (7.5, 7.5),
}
SIZE, BLOB = 16, 8
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@dataclass(frozen=True)
class ToyResult:
    recipe: str
    steps: int
    correct: int
    total: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def _latents(centres: list[tuple[float, float]], g: torch.Generator) -> torch.Tensor:
    """A blob (+1, channel-tinted) on a background (−0.5) per centre, jittered by up to one latent pixel."""
    out = torch.full((len(centres), 4, SIZE, SIZE), -0.5)
    tint = torch.tensor([1.0, 0.6, -0.2, 0.8]).view(4, 1, 1)
    for i, (r, c) in enumerate(centres):
        dr, dc = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        top, left = int(r + 0.5) - BLOB // 2 + dr, int(c + 0.5) - BLOB // 2 + dc
        top, left = min(max(top, 0), SIZE - BLOB), min(max(left, 0), SIZE - BLOB)
        out[i, :, top:top + BLOB, left:left + BLOB] = tint
    return out


def _models(seed: int):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=SIZE, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=64,
                                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                num_attention_heads=4, vocab_size=49408, max_position_embeddings=16,
                                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    return unet, text_encoder


def _tokenizer():
    from transformers import CLIPTokenizer

    from modules.paths import CONFIGS_DIR

    return CLIPTokenizer.from_pretrained(str(CONFIGS_DIR / "sd15" / "tokenizer"), local_files_only=True)


def _ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids


def train(recipe: str, steps: int, *, seed: int = 0, batch: int = 16, lr: float = 2e-3) -> tuple[Any, Any, Any]:
    """Train the toy under ``recipe`` ("epsilon" or "ztsnr"); returns (unet, text_encoder, tokenizer)."""
    from diffusers import DDPMScheduler

    if recipe not in ("epsilon", "ztsnr"):
        raise ValueError(f"recipe must be 'epsilon' or 'ztsnr', not {recipe!r}")
    ztsnr = recipe == "ztsnr"
    schedule = DDPMScheduler(**BETAS, rescale_betas_zero_snr=ztsnr,
                             prediction_type="v_prediction" if ztsnr else "epsilon")
    unet, text_encoder = _models(seed)
    tokenizer = _tokenizer()
    words = list(POSITIONS)
    ids = _ids(tokenizer, [f"a shape {w}" for w in words] + [""])
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    unet.train(), text_encoder.train()
    for _ in range(steps):
        which = torch.randint(0, len(words), (batch,), generator=g)
        x0 = _latents([POSITIONS[words[int(i)]] for i in which], g)
        caption = torch.where(torch.rand(batch, generator=g) < 0.1, len(words), which)  # 10 % empty, for CFG
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        noisy = schedule.add_noise(x0, noise, t)
        target = schedule.get_velocity(x0, noise, t) if ztsnr else noise
        context = text_encoder(ids[caption])[0]
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=context).sample, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    unet.eval(), text_encoder.eval()
    return unet, text_encoder, tokenizer


def read_position(latent: torch.Tensor) -> str:
    """The position word whose centre is nearest the blob's centre of mass (pixels brighter than the midpoint)."""
    image = latent[:2].mean(0)
    mask = (image > (image.max() + image.min()) / 2).float()
    rows, cols = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                                indexing="ij")
    total = mask.sum().clamp_min(1)
    r, c = float((mask * rows).sum() / total), float((mask * cols).sum() / total)
    return min(POSITIONS, key=lambda w: (POSITIONS[w][0] - r) ** 2 + (POSITIONS[w][1] - c) ** 2)


@torch.no_grad()
def sample(unet, text_encoder, tokenizer, recipe: str, captions: list[str], seeds: list[int], *,
           sampler: str = "DPM++ 2M", steps: int = 20, cfg: float = 5.0, guidance_rescale: float = 0.0) -> torch.Tensor:
    """Latents for ``captions`` (one seed each, one batch) through the app's scheduler for ``sampler`` (zero terminal
    SNR for the "ztsnr" recipe), with CFG (and CFG rescale φ)."""
    import inspect

    from modules import guidance, sd_samplers

    ztsnr = recipe == "ztsnr"
    config = {**BETAS, "prediction_type": "v_prediction" if ztsnr else "epsilon"}
    scheduler = sd_samplers.create_scheduler(sampler, "Automatic", config, zero_terminal_snr=ztsnr, noise_seeds=seeds)
    scheduler.set_timesteps(steps)
    x = torch.cat([torch.randn((1, 4, SIZE, SIZE), generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = x * scheduler.init_noise_sigma
    context = text_encoder(_ids(tokenizer, list(captions) + [""] * len(captions)))[0]
    rescale = guidance.Guidance(rescale=guidance_rescale, prediction_type=config["prediction_type"])
    kwargs = ({"generator": [torch.Generator().manual_seed(s + 7) for s in seeds]}
              if "generator" in inspect.signature(scheduler.step).parameters else {})
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        cond, uncond = unet(torch.cat([x_in, x_in]), t, encoder_hidden_states=context).sample.chunk(2)
        guided = rescale.apply(uncond + cfg * (cond - uncond), uncond, cfg, x_in, None)
        x = scheduler.step(guided, t, x, **kwargs).prev_sample
    return x


def position_accuracy(recipe: str, steps: int, *, seed: int = 0, eval_seeds: int = 4, sampler: str = "DPM++ 2M",
                      trained: tuple[Any, Any, Any] | None = None) -> ToyResult:
    """Train (unless ``trained`` is given) and count the samples whose blob lands where the caption says: every
    position word with each of ``eval_seeds`` seeds (the same seeds for every word)."""
    start = time.perf_counter()
    unet, text_encoder, tokenizer = trained or train(recipe, steps, seed=seed)
    words = [w for w in POSITIONS for _ in range(eval_seeds)]
    seeds = [1000 + i for _ in POSITIONS for i in range(eval_seeds)]
    latents = sample(unet, text_encoder, tokenizer, recipe, [f"a shape {w}" for w in words], seeds, sampler=sampler)
    correct = sum(read_position(latent) == word for latent, word in zip(latents, words))
    return ToyResult(recipe, steps, correct, len(words), time.perf_counter() - start)
