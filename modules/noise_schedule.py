"""Zero terminal SNR: "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al. 2023, arXiv
2305.08891), as A1111's "Noise schedule for sampling" setting, ComfyUI and reForge apply it.

Stable Diffusion's training schedule leaves √ᾱ_T ≈ 0.068 of the image in its noisiest step, so a model learns to read
layout and brightness from that remnant and at inference reads it from pure noise. A model trained on the fix has
(1) betas rescaled so that ᾱ_T = 0 (signal-to-noise ratio 0 at the last step), (2) v-prediction (ε is undefined at
SNR 0: x₀ = (x − √(1−ᾱ)·ε)/√ᾱ), and is sampled (3) from the last timestep ("trailing" spacing) with (4) CFG rescale
(``guidance_rescale``, ``modules.guidance``) against over-exposure.

When it applies (``enabled``): the setting ``sd_noise_schedule`` is "Zero Terminal SNR" (A1111's name; it forces the
schedule on any model, as in A1111), or the model says it was trained so (``SDModel.zero_terminal_snr``): a ``ztsnr``
key in a single file's state dict (the marker ComfyUI and reForge read; ``v_pred`` is read by ``modules.sd_models``
for the prediction type), or ``rescale_betas_zero_snr`` in a diffusers folder's scheduler config. The infotext then
carries ``Noise Schedule: Zero Terminal SNR`` (A1111's key), which the API reads back as an override.

How samplers run with it (``scheduler_values``): the model's betas are rescaled with diffusers'
``rescale_zero_terminal_snr`` (what ``rescale_betas_zero_snr=True`` runs). Diffusers' σ-based schedulers (Euler,
Euler a, DPM++ multistep, UniPC) take that flag themselves and then put ᾱ_T at 2⁻²⁴ instead of 0 ("so the first
sigma is not inf": σ_max ≈ 4096); every other scheduler gets the same table as ``trained_betas``. So every sampler
starts at SNR ≈ 6·10⁻⁸, where a v-model's x₀ is −v as in the paper, and Karras, Exponential and the other σ
schedules run from that σ_max, as A1111 and ComfyUI do (they put ᾱ_T at 4.9·10⁻⁸ for the same reason). A sampler
without a schedule of its own samples with trailing spacing. Refused, saying why: the DDIM schedule type (leading
spacing) and Align Your Steps (fixed tables from σ 14.6), which never visit the last timestep, so the picture would
start from pure noise at a step where the model expects signal — the very flaw the schedule fixes — and Beta, whose
steps, nearly even in σ up to σ_max ≈ 4096, pile up on the last timesteps (diffusers then fails or gives NaN).
Every sampler runs; no sampler as such is refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT = "Default"
ZERO_TERMINAL_SNR = "Zero Terminal SNR"
CHOICES = (DEFAULT, ZERO_TERMINAL_SNR)
INFOTEXT_KEY = "Noise Schedule"          # A1111's infotext key (its option's ``infotext``)
OPTION = "sd_noise_schedule"
ZTSNR_KEY, V_PRED_KEY = "ztsnr", "v_pred"  # marker keys in a single file's state dict (ComfyUI, reForge)

TERMINAL_ALPHA_BAR = 2.0 ** -24          # diffusers' floor for ᾱ_T in its σ-based schedulers
# Diffusers schedulers that rescale with ``rescale_betas_zero_snr`` and floor ᾱ_T themselves.
_FLOORS_ITSELF = frozenset({"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                            "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"})
# Schedule types refused with zero terminal SNR, and why.
_REFUSED = {
    "DDIM": "its leading spacing starts below the last timestep, so sampling would start from pure noise where "
            "the model expects some picture",
    "Align Your Steps": "its tables start at sigma 14.6 (the original schedule), not at zero SNR, so sampling would "
                        "start from pure noise where the model expects some picture",
    "Beta": "it spaces its steps nearly evenly in sigma up to sigma_max (about 4096 here), so most steps land on "
            "the last few timesteps, where several coincide",
}


def enabled(opts: Any, model: Any) -> bool:
    """Whether a job on ``model`` samples with zero terminal SNR: forced by the setting, or the model's own."""
    return getattr(opts, OPTION, DEFAULT) == ZERO_TERMINAL_SNR or bool(getattr(model, "zero_terminal_snr", False))


def declared_by_keys(keys: Any) -> bool:
    """A single file's state dict keys say the model was trained with zero terminal SNR."""
    return ZTSNR_KEY in keys


def declared_by_scheduler_config(config: Mapping[str, Any]) -> bool:
    """A diffusers folder's scheduler config says the model was trained with zero terminal SNR."""
    return bool(config.get("rescale_betas_zero_snr", False))


def check_schedule(sampler_name: str, schedule: str | None) -> None:
    """Raise ``ValueError`` for a schedule type that cannot sample from zero SNR (``schedule`` None = the model's
    own spacing, which becomes trailing)."""
    why = _REFUSED.get(schedule or "")
    if why:
        raise ValueError(f"schedule type {schedule!r} cannot be used with the {ZERO_TERMINAL_SNR} noise schedule: "
                         f"{why}. Use Automatic, Uniform, Simple, SGM Uniform, Karras or Exponential with "
                         f"{sampler_name!r}")


def check_steps(sampler_name: str, schedule: str | None, steps: int | None) -> None:
    """Raise ``ValueError`` for step counts at which a sampler gives NaN (a black picture) from zero SNR: DPM2 a at
    2 steps or fewer, and at 3 with Karras (measured; from 4 steps it runs)."""
    if steps is None or not sampler_name.startswith("DPM2 a"):
        return
    if steps <= 2 or (steps == 3 and schedule == "Karras"):
        raise ValueError(f"{sampler_name!r} needs at least {4 if schedule == 'Karras' else 3} sampling steps with the "
                         f"{ZERO_TERMINAL_SNR} noise schedule (with {steps} it gives NaN: a black picture)")


def scheduler_values(model_values: Mapping[str, Any], scheduler_class: str) -> dict[str, Any]:
    """The model's noise-schedule values (``sd_samplers``' ``_model_values``) for sampling with zero terminal SNR
    on the diffusers class ``scheduler_class``: trailing spacing, and the rescale flag or the rescaled betas."""
    values = {**model_values, "timestep_spacing": "trailing", "steps_offset": 0}
    if scheduler_class in _FLOORS_ITSELF:
        return {**values, "rescale_betas_zero_snr": True}
    return {**values, "rescale_betas_zero_snr": False, "trained_betas": rescaled_betas(model_values).tolist()}


def rescaled_betas(model_values: Mapping[str, Any]) -> Any:
    """The model's betas rescaled to zero terminal SNR by diffusers, with ᾱ_T floored at ``TERMINAL_ALPHA_BAR``
    (float64 numpy array)."""
    import numpy as np
    from diffusers import DDIMScheduler  # builds the betas from the config and runs rescale_zero_terminal_snr

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    table = DDIMScheduler(**{k: model_values[k] for k in keys if k in model_values}, rescale_betas_zero_snr=True)
    betas = table.betas.double().numpy().copy()
    alphas_bar = np.cumprod(1.0 - betas)
    betas[-1] = 1.0 - TERMINAL_ALPHA_BAR / alphas_bar[-2]
    return betas


def infotext_params(on: bool) -> dict[str, str]:
    return {INFOTEXT_KEY: ZERO_TERMINAL_SNR} if on else {}
