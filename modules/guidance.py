"""What happens to the guided prediction after classifier-free guidance combined it: CFG rescale and dynamic
thresholding, two ways to push the guidance scale up without burned, over-saturated colours.

- **CFG rescale** (``guidance_rescale``, "Common Diffusion Noise Schedules and Sample Steps are Flawed" §3.4):
  diffusers' ``rescale_noise_cfg`` brings the guided prediction's standard deviation back towards that of the
  conditional prediction, mixed by the factor φ in [0, 1].
- **Dynamic thresholding** (Imagen, Saharia et al. 2022): at every step the predicted clean sample x₀ is clamped at
  ``s``, the given percentile of its absolute values, and rescaled. Imagen rescales into the data range [-1, 1]; a
  latent model has no fixed data range, so the range here is the same percentile of the x₀ that a moderate
  "mimic" guidance scale predicts at this step (x₀ is linear in the prediction, so it costs no UNet call): x₀ is
  clamped to [-s, s] and multiplied by ``s_mimic / s`` when ``s > s_mimic``.

Both work on the prediction of any sampler, for epsilon and v-prediction models, and are no-ops at their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modules import infotext

DEFAULT_MIMIC_SCALE = 7.0


@dataclass(frozen=True)
class Guidance:
    """The post-CFG adjustments of a job (``Guidance.of(p)``); ``active`` is False when they change nothing."""

    rescale: float = 0.0
    threshold_ratio: float = 0.0          # percentile as a fraction (0.995); 0 = off
    mimic_scale: float = DEFAULT_MIMIC_SCALE
    prediction_type: str = "epsilon"

    @classmethod
    def of(cls, p: Any, model: Any) -> "Guidance":
        return cls(rescale=float(getattr(p, "guidance_rescale", 0.0) or 0.0),
                   threshold_ratio=float(getattr(p, "dynamic_thresholding", 0.0) or 0.0),
                   mimic_scale=float(getattr(p, "dynamic_thresholding_mimic_scale", DEFAULT_MIMIC_SCALE)),
                   prediction_type=getattr(model, "prediction_type", "epsilon"))

    @property
    def active(self) -> bool:
        return self.rescale > 0 or self.threshold_ratio > 0

    def apply(self, guided: torch.Tensor, uncond: torch.Tensor, cfg_scale: float, x: torch.Tensor,
              sigma: torch.Tensor | None) -> torch.Tensor:
        """Adjust ``guided = uncond + cfg·Σwᵢ(condᵢ − uncond)`` of a batch; ``x`` is the UNet's latent input and
        ``sigma`` the step's noise level (k-diffusion's σ = sqrt((1 − ᾱ)/ᾱ))."""
        if not self.active or cfg_scale == 0:
            return guided
        x = x[:, :guided.shape[1]]
        if self.threshold_ratio > 0 and sigma is not None and cfg_scale > self.mimic_scale:
            mimic = uncond + (guided - uncond) * (self.mimic_scale / cfg_scale)
            guided = self._threshold(guided, mimic, x, sigma)
        if self.rescale > 0:
            from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

            text = uncond + (guided - uncond) / cfg_scale  # the guidance at scale 1: the conditional prediction
            guided = rescale_noise_cfg(guided, text, guidance_rescale=self.rescale)
        return guided

    def _threshold(self, guided: torch.Tensor, mimic: torch.Tensor, x: torch.Tensor,
                   sigma: torch.Tensor) -> torch.Tensor:
        # The UNet input is x = sqrt(ᾱ)·x₀ + sqrt(1 − ᾱ)·ε for every sampler (k-samplers scale their input to it).
        alpha = (1.0 / (1.0 + sigma.float() ** 2)).to(x.dtype)
        a, b = alpha.sqrt(), (1 - alpha).sqrt()
        x0 = self._x0(guided, x, a, b)
        mean = x0.mean(dim=tuple(range(2, x0.ndim)), keepdim=True)   # per channel: latent 0 is not a neutral colour
        centred = x0 - mean
        mimic_x0 = self._x0(mimic, x, a, b)
        s = self._percentile(centred)
        s_ref = torch.minimum(self._percentile(mimic_x0 - mimic_x0.mean(dim=tuple(range(2, x0.ndim)), keepdim=True)),
                              s)
        x0 = mean + torch.maximum(torch.minimum(centred, s), -s) * (s_ref / s)
        if self.prediction_type == "v_prediction":
            return (a * x - x0) / b
        return (x - a * x0) / b

    def _percentile(self, x: torch.Tensor) -> torch.Tensor:
        """Per image, the ``threshold_ratio`` quantile of ``|x|``, shaped to broadcast over ``x``."""
        q = torch.quantile(x.reshape(x.shape[0], -1).abs().float(), self.threshold_ratio, dim=1)
        return q.clamp_min(1e-6).to(x.dtype).view((-1,) + (1,) * (x.ndim - 1))

    def _x0(self, prediction: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return a * x - b * prediction
        return (x - b * prediction) / a

    def infotext_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.rescale > 0:
            params[infotext.CFG_RESCALE_KEY] = self.rescale
        if self.threshold_ratio > 0:
            params["Dynamic thresholding"] = self.threshold_ratio
            params["Dynamic thresholding mimic scale"] = self.mimic_scale
        return params
