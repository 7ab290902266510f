"""The generation path, top to bottom.

    parameters (pydantic, A1111 field names)
      -> prompts, seeds                              StableDiffusionProcessing.setup_prompts
      -> conditioning (per step, AND parts)          modules.conditioning
      -> initial latents (noise / encoded image)     Txt2Img.init_latents / Img2Img.init_latents
      -> sampling loop with CFG                      sample()
      -> VAE decode, inpaint overlay                 decode_latents(), Img2Img.postprocess_image
      -> infotext + atomic save                      modules.infotext, modules.images
      -> Processed

``process_images(p)`` is A1111's entry point; extensions call it with a ``p`` they built or were given. The loaded
model (``p.sd_model``), the options for this job (``p.opts``) and the job's progress (``p.state``) travel on ``p``;
when an extension builds a ``p`` without them, the app's current ones are used (``modules.shared``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sys
import time
import weakref
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from tqdm.auto import tqdm

from modules import (attention, conditioning, cpu_threads, extra_networks, guidance, images, infotext, limits,
                     live_previews, masking, noise_schedule, rng, script_callbacks, sd_samplers, styles)
from modules.options import Options
from modules.paths import confine
from modules.progress import JobState

log = logging.getLogger(__name__)

MAX_SIDE = 2048
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


class GenerationError(ValueError):
    """A request that cannot be generated; the message names the parameter."""


create_infotext = infotext.create_infotext   # A1111 name: processing.create_infotext(p, all_prompts, all_seeds, ...)


def fix_seed(p: "StableDiffusionProcessing") -> None:
    """Replace a random seed (-1) by the one the job will use, so a script can reuse it (A1111's ``fix_seed``); a
    list of seeds (one per image) is kept as it is."""
    p.seed = p.seed if isinstance(p.seed, list) else rng.fixed_seed(p.seed)
    p.subseed = p.subseed if isinstance(p.subseed, list) else rng.fixed_seed(p.subseed)


def _first(seed: int | list[int]) -> int:
    return int(seed[0]) if isinstance(seed, list) and seed else int(seed)


def setup_color_correction(image: Image.Image) -> np.ndarray:
    """What ``apply_color_correction`` matches later images to: ``image`` in CIELAB (A1111's loopback keeps the colours
    of its first input this way)."""
    from skimage import color

    return color.rgb2lab(np.asarray(image.convert("RGB")))


def apply_color_correction(correction: np.ndarray, original_image: Image.Image) -> Image.Image:
    """``original_image`` with its CIELAB histograms matched to ``correction``'s, keeping its luminosity (A1111)."""
    from skimage import color, exposure

    lab = color.rgb2lab(np.asarray(original_image.convert("RGB")))
    matched = color.lab2rgb(exposure.match_histograms(lab, correction, channel_axis=2))
    corrected = Image.fromarray((np.clip(matched, 0, 1) * 255).round().astype(np.uint8))
    return _with_lightness_of(corrected, original_image)


def _with_lightness_of(colors: Image.Image, original: Image.Image) -> Image.Image:
    """The colours of ``colors`` with the lightness of ``original`` (CIELAB L of one, a/b of the other)."""
    from skimage import color

    lab = color.rgb2lab(np.asarray(colors.convert("RGB")))
    lab[..., 0] = color.rgb2lab(np.asarray(original.convert("RGB")))[..., 0]
    return Image.fromarray((np.clip(color.lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------------
class StableDiffusionProcessing(BaseModel):
    """Parameters shared by txt2img and img2img. Defaults are A1111's UI defaults (the API has its own)."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True, validate_assignment=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    steps: int = Field(20, ge=1, le=1000)
    cfg_scale: int | float = Field(7.0, ge=0.0, le=100.0)  # an int stays an int: the infotext shows what was asked
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0)  # CFG rescale φ (modules.guidance)
    dynamic_thresholding: float = Field(0.0, ge=0.0, le=1.0)  # percentile as a fraction, 0 = off (modules.guidance)
    dynamic_thresholding_mimic_scale: float = Field(guidance.DEFAULT_MIMIC_SCALE, ge=1.0, le=100.0)
    width: int = Field(512, ge=8, le=MAX_SIDE)
    height: int = Field(512, ge=8, le=MAX_SIDE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = Field(None, ge=0.0, le=1.0)
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    clip_skip: int | None = Field(None, ge=1, le=12)
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    extra_generation_params: dict[str, Any] = Field(default_factory=dict)
    comments: dict[str, Any] = Field(default_factory=dict)
    disable_extra_networks: bool = False
    # Runtime, set by whoever runs the job (not parameters; excluded from dumps).
    sd_model: Any = Field(None, exclude=True)
    opts: Any = Field(None, exclude=True)
    state: Any = Field(None, exclude=True)
    scripts: Any = Field(None, exclude=True)
    script_args: list[Any] = Field(default_factory=list, exclude=True)
    prompt_resources: Any = Field(None, exclude=True)  # extra_networks.PromptResources: styles, embeddings, LoRA
    upscalers: Any = Field(None, exclude=True)  # upscalers.UpscalerRegistry: hires fix's pixel upscalers
    _unfinished: bool = PrivateAttr(False)  # the batch being sampled was interrupted before its last step
    attention_controllers: list[Any] = Field(default_factory=list, exclude=True)  # modules.attention, set by scripts

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int, info) -> int:
        if v % 8:
            raise ValueError(f"{info.field_name} must be a multiple of 8 (got {v})")
        return v

    @field_validator("dynamic_thresholding")
    @classmethod
    def _percentile(cls, v: float) -> float:
        if v and v < 0.5:
            raise ValueError(f"dynamic_thresholding is the percentile of |x0| kept, in [0.5, 1] (0 = off); got {v}")
        return v

    @field_validator("cfg_scale", "subseed_strength", "eta", "s_churn", "s_tmax", "s_tmin", "s_noise",
                     "guidance_rescale", "dynamic_thresholding", "dynamic_thresholding_mimic_scale")
    @classmethod
    def _finite(cls, v: float | None, info) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{info.field_name} must be a finite number")
        return v

    # A1111 exposes these as attributes of p; they are filled by setup_prompts().
    all_prompts: list[str] = Field(default_factory=list, exclude=True)
    all_negative_prompts: list[str] = Field(default_factory=list, exclude=True)
    all_seeds: list[int] = Field(default_factory=list, exclude=True)
    all_subseeds: list[int] = Field(default_factory=list, exclude=True)
    all_hr_prompts: list[str] = Field(default_factory=list, exclude=True)
    all_hr_negative_prompts: list[str] = Field(default_factory=list, exclude=True)
    main_prompt: str | None = Field(None, exclude=True)             # the grid's infotext prompt
    main_negative_prompt: str | None = Field(None, exclude=True)
    prompt_for_display: str | None = Field(None, exclude=True)
    iteration: int = Field(0, exclude=True)
    batch_index: int = Field(0, exclude=True)
    # The batch being made (A1111): set before ``before_process_batch``; a script that changes them there changes
    # what this batch is conditioned on and seeded with.
    prompts: list[str] = Field(default_factory=list, exclude=True)
    negative_prompts: list[str] = Field(default_factory=list, exclude=True)
    seeds: list[int] = Field(default_factory=list, exclude=True)
    subseeds: list[int] = Field(default_factory=list, exclude=True)
    extra_network_data: dict[str, Any] = Field(default_factory=dict, exclude=True)
    sampler: Any = Field(None, exclude=True)              # the diffusers scheduler of the running pass
    rng: Any = Field(None, exclude=True)                  # rng.ImageRNG of the batch being sampled (A1111 p.rng)
    cached_c: list[Any] = Field(default_factory=lambda: [None, None], exclude=True)   # conditioning is never cached
    cached_uc: list[Any] = Field(default_factory=lambda: [None, None], exclude=True)  # here: kept for extensions
    color_corrections: list[Any] | None = Field(None, exclude=True)   # from setup_color_correction, per image
    overlay_images: list[Any] | None = Field(None, exclude=True)      # originals (RGBA, masked part clear) put over results
    paste_to: tuple[int, int, int, int] | None = Field(None, exclude=True)
    image_conditioning: Any = Field(None, exclude=True)
    is_using_inpainting_conditioning: bool = Field(False, exclude=True)

    is_img2img: bool = Field(False, exclude=True)
    tab: str = Field("txt2img", exclude=True)
    data_dir: str | None = Field(None, exclude=True)
    allowed_output_dirs: tuple[Any, ...] = Field((), exclude=True)  # outputs go under data_dir or one of these
    # -- model-derived infotext values (A1111 reads these off p) -------------------------------------------------------
    @property
    def sd_model_name(self) -> str | None:
        info = getattr(self.sd_model, "sd_checkpoint_info", None)
        return getattr(info, "model_name", None)

    @property
    def sd_model_hash(self) -> str | None:
        return getattr(self.sd_model, "sd_model_hash", None)

    @property
    def sd_vae_name(self) -> str | None:
        return getattr(self.sd_model, "sd_vae_name", None)

    @property
    def sd_vae_hash(self) -> str | None:
        return getattr(self.sd_model, "sd_vae_hash", None)

    # -- setup ---------------------------------------------------------------------------------------------------------
    def setup_prompts(self) -> None:
        """Expand prompts and seeds to one per image (image i of the job gets seed+i, as A1111)."""
        n = self.batch_size * self.n_iter
        self.all_prompts = _expand(self.prompt, n)
        self.all_negative_prompts = _expand(self.negative_prompt, n)
        fix_seed(self)
        self.all_seeds, self.all_subseeds = rng.job_seeds(_first(self.seed), _first(self.subseed),
                                                          self.subseed_strength, n)
        # A1111: a script may give one seed per image (prompt matrix does) instead of the first one.
        for name, value in (("seed", self.seed), ("subseed", self.subseed)):
            if isinstance(value, list):
                if len(value) < n:
                    raise GenerationError(f"{name}: {len(value)} seeds for {n} images")
                setattr(self, f"all_{name}s", [int(v) for v in value[:n]])
        self.clip_skip = self.effective_clip_skip()

    def effective_clip_skip(self) -> int:
        return self.clip_skip or self.opts.CLIP_stop_at_last_layers

    def infotext(self, index: int) -> str:
        """Infotext of image ``index`` of the job (A1111's ``create_infotext`` layout)."""
        iteration, position = divmod(index, self.batch_size)
        return infotext.create_infotext(self, self.all_prompts, self.all_seeds, self.all_subseeds,
                                        iteration=iteration, position_in_batch=position,
                                        all_negative_prompts=self.all_negative_prompts)

    # -- per-mode hooks (overridden) -----------------------------------------------------------------------------------
    def init(self, model: Any) -> None:
        """Prepare mode-specific inputs once per job."""

    def sample_batch(self, model: Any, conds: Any, unconds: Any, seeds: list[int], subseeds: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def overlay_for(self, index_in_batch: int) -> tuple[Image.Image | None, Image.Image | None]:
        """``(mask_for_overlay, overlay_image)`` that image ``index_in_batch`` is pasted over (none for txt2img)."""
        return None, None

    def apply_overlay(self, image: Image.Image, mask_for_overlay: Image.Image | None,
                      overlay_image: Image.Image | None) -> Image.Image:
        return image


def _expand(value: str | list[str], n: int) -> list[str]:
    if isinstance(value, list):
        if len(value) != n:
            raise GenerationError(f"prompt list has {len(value)} entries, expected batch_size*n_iter = {n}")
        return list(value)
    return [value] * n


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float | None = Field(None, ge=0.0, le=1.0)
    hr_scale: float = Field(2.0, ge=1.0, le=8.0)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=1000)
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE)
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    firstphase_width: int = 0
    firstphase_height: int = 0

    def pixel_upscaler(self) -> Any:
        """The ``UpscalerData`` that ``hr_upscaler`` names when it is not a latent mode (Lanczos, Nearest, None or an
        upscaler model from ``modules.upscalers``); a ``GenerationError`` naming the field and the valid names."""
        from modules.upscalers import UpscalerError, UpscalerRegistry

        upscalers = self.upscalers if self.upscalers is not None else UpscalerRegistry({}, self.opts)
        try:
            return upscalers.find(self.hr_upscaler, "hr_upscaler")
        except UpscalerError as e:
            raise GenerationError(f"{e}, {', '.join(LATENT_UPSCALE_MODES)}") from None

    def hires_size(self) -> tuple[int, int]:
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            w, h = int(self.width * self.hr_scale), int(self.height * self.hr_scale)
        elif self.hr_resize_y == 0:
            w, h = self.hr_resize_x, self.hr_resize_x * self.height // self.width
        elif self.hr_resize_x == 0:
            w, h = self.hr_resize_y * self.width // self.height, self.hr_resize_y
        else:
            w, h = self.hr_resize_x, self.hr_resize_y
        return w // 8 * 8, h // 8 * 8

    def init(self, model: Any) -> None:
        if self.enable_hr:
            if self.hr_upscaler not in LATENT_UPSCALE_MODES:
                self.pixel_upscaler()  # an unknown name fails before any sampling
            if self.denoising_strength is None:
                self.denoising_strength = 0.7
            hr_w, hr_h = self.hires_size()
            self.extra_generation_params.update({
                "Denoising strength": self.denoising_strength,
                "Hires upscale": self.hr_scale if not (self.hr_resize_x or self.hr_resize_y) else None,
                "Hires resize": f"{hr_w}x{hr_h}" if (self.hr_resize_x or self.hr_resize_y) else None,
                "Hires steps": self.hr_second_pass_steps or None,
                "Hires upscaler": self.hr_upscaler,
                # as A1111: written when they differ from the first pass's, so a paste gives them back
                "Hires sampler": self.hr_sampler_name if self.hr_sampler_name not in (None, self.sampler_name) else None,
                "Hires schedule type": self.hr_scheduler if self.hr_scheduler not in (None, self.scheduler) else None,
                "Hires prompt": self.hr_prompt if self.hr_prompt and self.hr_prompt != self.prompt else None,
                "Hires negative prompt": (self.hr_negative_prompt if self.hr_negative_prompt
                                          and self.hr_negative_prompt != self.negative_prompt else None),
            })
            self.extra_generation_params = {k: v for k, v in self.extra_generation_params.items() if v is not None}
        else:
            self.denoising_strength = None

    def sample_batch(self, model, conds, unconds, seeds, subseeds):
        f = model.vae_scale_factor
        shape = (model.unet.config.in_channels if not model.is_inpaint else 4, self.height // f, self.width // f)
        self.rng = rng.ImageRNG(shape, seeds, subseeds, self.subseed_strength, self.seed_resize_from_h,
                                self.seed_resize_from_w, vae_scale_factor=f)   # A1111's p.rng
        noise = self.rng.next().to(model.device)
        _run_hook(self, "process_before_every_sampling", x=noise, noise=noise, c=conds, uc=unconds)
        scheduler = make_scheduler(self, model, seeds=seeds)
        scheduler.set_timesteps(self.steps, device=model.device)
        latents = noise * scheduler.init_noise_sigma
        image_cond = _blank_inpaint_conditioning(model, latents) if model.is_inpaint else None
        self.image_conditioning, self.is_using_inpainting_conditioning = image_cond, model.is_inpaint
        latents = sample(model, scheduler, latents, scheduler.timesteps, conds, unconds, self,
                         generators=step_generators(self, seeds, shape), image_conditioning=image_cond)
        if self.enable_hr and self.state.interrupted:
            self._unfinished = True  # interrupted before its hires pass
        if not self.enable_hr or self.state.interrupted:
            return latents
        return self.hires_pass(model, latents, seeds, subseeds)

    def hires_pass(self, model, latents, seeds, subseeds) -> torch.Tensor:
        """Upscale the first pass and refine it with img2img at ``denoising_strength`` (A1111's hires fix)."""
        _run_hook(self, "before_hr")
        hr_w, hr_h = self.hires_size()
        f = model.vae_scale_factor
        if self.hr_upscaler in LATENT_UPSCALE_MODES:
            mode, antialias = LATENT_UPSCALE_MODES[self.hr_upscaler]
            latents = torch.nn.functional.interpolate(latents, size=(hr_h // f, hr_w // f), mode=mode,
                                                      antialias=antialias)
        else:
            upscaler = self.pixel_upscaler()
            pictures = [_upscale_to(upscaler, im, hr_w, hr_h) for im in decode_latents(model, latents)]
            latents = encode_images(model, pictures)
        steps = self.hr_second_pass_steps or self.steps
        shape = tuple(latents.shape[1:])
        noise = rng.create_noise(shape, seeds, subseeds, self.subseed_strength).to(model.device)
        # The hires pass has its own prompt schedule (A1111: `[a:b:1.5]` switches during this pass).
        hr_conds, hr_unconds = conds_for(self, model, self._hr_prompts(), self._hr_negative_prompts(), self.steps,
                                         hires_steps=steps)
        _run_hook(self, "process_before_every_sampling", x=latents, noise=noise, c=hr_conds, uc=hr_unconds)
        scheduler = make_scheduler(self, model, self.hr_sampler_name, self.hr_scheduler, seeds)
        timesteps = img2img_timesteps(scheduler, steps, self.denoising_strength, self.opts.img2img_fix_steps, model.device)
        if len(timesteps) == 0:
            return latents
        latents = add_extra_noise(self, latents, scheduler.add_noise(latents, noise, timesteps[:1]), noise)
        self.state.sampling_step = 0
        return sample(model, scheduler, latents, timesteps, hr_conds, hr_unconds, self,
                      generators=step_generators(self, seeds, shape))

    def setup_hr_prompts(self) -> None:
        """``all_hr_prompts`` / ``all_hr_negative_prompts``: the hires pass's prompts (the first pass's, styled, unless
        ``hr_prompt`` / ``hr_negative_prompt`` are set). Scripts may change them in ``process``."""
        n = len(self.all_prompts)
        self.all_hr_prompts = _expand(self.hr_prompt, n) if self.hr_prompt else list(self.all_prompts)
        self.all_hr_negative_prompts = (_expand(self.hr_negative_prompt, n) if self.hr_negative_prompt
                                        else list(self.all_negative_prompts))

    def _hr_prompts(self) -> list[str]:
        return self._batch_slice(self.all_hr_prompts or self.all_prompts)

    def _hr_negative_prompts(self) -> list[str]:
        return self._batch_slice(self.all_hr_negative_prompts or self.all_negative_prompts)

    def _batch_slice(self, values: list[str]) -> list[str]:
        start = self.iteration * self.batch_size
        return values[start:start + self.batch_size]


def _upscale_to(upscaler: Any, image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` brought to ``width`` x ``height`` in pixel space by ``upscaler`` ("None": Lanczos, as A1111)."""
    image = upscaler.scaler.upscale(image, max(width / image.width, height / image.height), upscaler.data_path)
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """img2img / inpainting. As in A1111, a script may replace ``image_mask`` (the mask; ``mask`` is the same thing),
    ``latent_mask`` (a separate mask for the latent blend and the "fill" content, e.g. sharper than the blurred
    ``image_mask`` that the result is pasted back with), ``init_images`` (of any size: they are brought to
    ``width`` x ``height``) and ``mask_blur`` before the job starts."""

    init_images: list[Any] = Field(default_factory=list)
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    image_cfg_scale: float | None = None
    mask: Any = None
    latent_mask: Any = Field(None, exclude=True)
    mask_blur_x: int = Field(4, ge=0, le=256)
    mask_blur_y: int = Field(4, ge=0, le=256)
    mask_round: bool = True
    inpainting_fill: int = Field(1, ge=0, le=3)
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = Field(32, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=1.5)
    is_img2img: bool = Field(True, exclude=True)
    tab: str = Field("img2img", exclude=True)
    init_latent: Any = Field(None, exclude=True)            # the encoded init images of the batch being made
    mask_for_overlay: Any = Field(None, exclude=True)       # where the result is pasted over the original
    _images: list[Image.Image] = PrivateAttr(default_factory=list)
    _mask: Image.Image | None = PrivateAttr(None)
    _latent_mask_image: Image.Image | None = PrivateAttr(None)
    _region: Any = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _a1111_names(cls, data: Any) -> Any:
        """A1111's constructor names: ``mask_blur`` sets both blur radii, ``image_mask`` is ``mask``."""
        if isinstance(data, dict):
            data = dict(data)
            image_mask = data.pop("image_mask", None)
            if image_mask is not None and data.get("mask") is None:
                data["mask"] = image_mask
            blur = data.pop("mask_blur", None)
            if blur is not None:
                data["mask_blur_x"] = data["mask_blur_y"] = blur
        return data

    @model_validator(mode="after")
    def _check_images(self) -> "StableDiffusionProcessingImg2Img":
        if not self.init_images:
            raise ValueError("init_images: at least one init image is required")
        for i, im in enumerate(self.init_images):
            if not isinstance(im, Image.Image):
                raise ValueError(f"init_images[{i}] is not an image")
        if self.mask is not None and not isinstance(self.mask, Image.Image):
            raise ValueError("mask is not an image")
        return self

    @property
    def image_mask(self) -> Image.Image | None:
        return self.mask

    @image_mask.setter
    def image_mask(self, value: Image.Image | None) -> None:
        self.mask = value

    @property
    def mask_blur(self) -> int | None:
        return self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None

    @mask_blur.setter
    def mask_blur(self, value: int | None) -> None:
        if value is not None:
            self.mask_blur_x = self.mask_blur_y = int(value)

    def init(self, model: Any) -> None:
        for name, value in (("init_images", self.init_images), ("image_mask", self.mask),
                            ("latent_mask", self.latent_mask)):
            for item in value if isinstance(value, list) else [value]:
                if item is not None and not isinstance(item, Image.Image):
                    raise GenerationError(f"{name}: expected a PIL image, got {type(item).__name__}")
        if not self.init_images:
            raise GenerationError("init_images: at least one init image is required")
        self.extra_generation_params.setdefault("Denoising strength", self.denoising_strength)
        self._region = self.paste_to = None
        background = self.opts.img2img_background_color
        images_in = [images.flatten(ImageOps.exif_transpose(im), background) for im in self.init_images]
        self._mask = self._latent_mask_image = self.mask_for_overlay = None
        if self.mask is None:
            self._images = [images.resize_image(self.resize_mode, im, self.width, self.height) for im in images_in]
            self.overlay_images = None
            return
        mask = self.mask.convert("L")
        if mask.size != images_in[0].size:
            raise GenerationError(f"mask: size {mask.size[0]}x{mask.size[1]} differs from the init image "
                                  f"{images_in[0].size[0]}x{images_in[0].size[1]}")
        if self.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        mask = masking.blur(mask, self.mask_blur_x, self.mask_blur_y)
        if self.mask_round:
            mask = mask.point(lambda v: 255 if v > 127 else 0)
        self.extra_generation_params.update({"Mask blur": self.mask_blur_x} if self.mask_blur_x == self.mask_blur_y
                                            else {"Mask blur X": self.mask_blur_x, "Mask blur Y": self.mask_blur_y})
        latent_mask = self.latent_mask.convert("L") if self.latent_mask is not None else None
        if latent_mask is not None and latent_mask.size != mask.size:
            latent_mask = latent_mask.resize(mask.size, Image.Resampling.BILINEAR)
        if self.inpaint_full_res:
            region = self._region = masking.crop_region(mask, self.inpaint_full_res_padding, self.width, self.height)
            self.paste_to = (region.left, region.top, region.right - region.left, region.bottom - region.top)
            self.mask_for_overlay, self.overlay_images = mask, masking.overlays(images_in, mask)
            mask = region.crop_resize(mask, self.width, self.height)
            latent_mask = region.crop_resize(latent_mask, self.width, self.height) if latent_mask else None
            images_in = [region.crop_resize(im, self.width, self.height) for im in images_in]
            self.extra_generation_params["Inpaint area"] = "Only masked"
            self.extra_generation_params["Masked area padding"] = self.inpaint_full_res_padding
        else:
            mask = images.resize_image(self.resize_mode, mask, self.width, self.height)
            if latent_mask is not None:
                latent_mask = images.resize_image(self.resize_mode, latent_mask, self.width, self.height)
            images_in = [images.resize_image(self.resize_mode, im, self.width, self.height) for im in images_in]
            self.mask_for_overlay, self.overlay_images = mask, masking.overlays(images_in, mask)
        self.extra_generation_params["Masked content"] = ["fill", "original", "latent noise", "latent nothing"][self.inpainting_fill]
        self._latent_mask_image = latent_mask or mask
        if self.inpainting_fill == 0:
            images_in = [masking.fill(im, self._latent_mask_image) for im in images_in]
        self._mask = mask
        self._images = images_in

    def sample_batch(self, model, conds, unconds, seeds, subseeds):
        n = len(seeds)
        batch_images = [self._images[(self.iteration * self.batch_size + i) % len(self._images)] for i in range(n)]
        init_latents = self.init_latent = encode_images(model, batch_images)
        shape = tuple(init_latents.shape[1:])
        self.rng = rng.ImageRNG(shape, seeds, subseeds, self.subseed_strength, self.seed_resize_from_h,
                                self.seed_resize_from_w, vae_scale_factor=model.vae_scale_factor)   # A1111's p.rng
        noise = self.rng.next().to(model.device)
        multiplier = self.initial_noise_multiplier if self.initial_noise_multiplier is not None else self.opts.initial_noise_multiplier
        if multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = multiplier
            noise = noise * multiplier
        latent_mask = None
        image_cond = None
        if self._mask is not None:
            latent_mask = masking.latent_mask(self._latent_mask_image, shape[1:]).to(model.device)  # 1 = regenerate
            if self.inpainting_fill == 2:   # latent noise
                init_latents = init_latents * (1 - latent_mask) + noise * latent_mask
            elif self.inpainting_fill == 3:  # latent nothing
                init_latents = init_latents * (1 - latent_mask)
            if model.is_inpaint:
                image_cond = _inpaint_conditioning(model, batch_images, self._mask)
        elif model.is_inpaint:
            image_cond = _blank_inpaint_conditioning(model, init_latents)
        self.image_conditioning, self.is_using_inpainting_conditioning = image_cond, model.is_inpaint
        _run_hook(self, "process_before_every_sampling", x=init_latents, noise=noise, c=conds, uc=unconds)
        scheduler = make_scheduler(self, model, seeds=seeds)
        timesteps = img2img_timesteps(scheduler, self.steps, self.denoising_strength, self.opts.img2img_fix_steps, model.device)
        if len(timesteps) == 0:
            return init_latents
        latents = add_extra_noise(self, init_latents, scheduler.add_noise(init_latents, noise, timesteps[:1]), noise)
        return sample(model, scheduler, latents, timesteps, conds, unconds, self,
                      generators=step_generators(self, seeds, shape), image_conditioning=image_cond,
                      inpaint=None if (latent_mask is None or model.is_inpaint) else (latent_mask, init_latents, noise))

    def overlay_for(self, index_in_batch: int) -> tuple[Image.Image | None, Image.Image | None]:
        if self.mask_for_overlay is None or not self.overlay_images or not self.opts.overlay_inpaint:
            return self.mask_for_overlay, None
        index = (self.iteration * self.batch_size + index_in_batch) % len(self.overlay_images)
        return self.mask_for_overlay, self.overlay_images[index]

    def apply_overlay(self, image: Image.Image, mask_for_overlay: Image.Image | None,
                      overlay_image: Image.Image | None) -> Image.Image:
        """Put the original over the result so pixels outside the mask are unchanged (A1111's overlay): an RGBA
        overlay (A1111's form, ``p.overlay_images``) by its alpha; an opaque one through ``mask_for_overlay``."""
        if overlay_image is None or (mask_for_overlay is None and overlay_image.mode != "RGBA"):
            return image
        if overlay_image.mode == "RGBA":
            base = self._region.place(image, overlay_image.size) if self._region is not None else image
            return masking.put_overlay(base, overlay_image, image.mode)
        if self._region is not None:
            return self._region.paste_back(image, overlay_image, mask_for_overlay)
        return Image.composite(image, overlay_image.convert(image.mode), mask_for_overlay.convert("L"))


# ---------------------------------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------------------------------
class Processed:
    """The result of a job, A1111's ``Processed``: ``Processed(p, images_list, seed, info, subseed, all_prompts,
    all_negative_prompts, all_seeds, all_subseeds, index_of_first_image, infotexts, comments, extra_images_list)``
    positionally as extensions build it; the app passes ``images=`` / ``infotexts=`` by keyword. Missing per-image
    lists are taken from ``p`` (as A1111), ``info`` defaults to the first infotext."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list[Image.Image] | None = None, seed: int = -1,
                 info: str = "", subseed: int | None = None, all_prompts: list[str] | None = None,
                 all_negative_prompts: list[str] | None = None, all_seeds: list[int] | None = None,
                 all_subseeds: list[int] | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str = "", extra_images_list: list[Any] | None = None,
                 *, images: list[Image.Image] | None = None, interrupted: bool = False,
                 files: list[str] | None = None, timings: dict[str, float] | None = None) -> None:
        self.p = p
        self.images = list(images if images is not None else images_list or [])
        self.extra_images = list(extra_images_list or [])
        self.seed = seed
        self.subseed = subseed
        self.all_prompts = list(all_prompts if all_prompts is not None else getattr(p, "all_prompts", None) or [])
        self.all_negative_prompts = list(all_negative_prompts if all_negative_prompts is not None
                                         else getattr(p, "all_negative_prompts", None) or [])
        self.all_seeds = list(all_seeds if all_seeds is not None else getattr(p, "all_seeds", None) or [])
        self.all_subseeds = list(all_subseeds if all_subseeds is not None else getattr(p, "all_subseeds", None) or [])
        self.index_of_first_image = index_of_first_image
        self.infotexts = list(infotexts) if infotexts is not None else [info] * len(self.images)
        self.info = info or (self.infotexts[0] if self.infotexts else "")
        self.comments = "\n".join(comments) if isinstance(comments, (list, tuple)) else (comments or "")
        self.interrupted = interrupted
        self.files = list(files or [])
        self.timings = dict(timings or {})

    def __getattr__(self, name: str) -> Any:
        """A1111's Processed copies the job's parameters (``width``, ``steps``, ``sampler_name``, ...): read them
        off ``p``."""
        if name.startswith("__") or name == "p":
            raise AttributeError(name)
        return getattr(self.p, name)

    @property
    def prompt(self) -> str:
        return self.all_prompts[0] if self.all_prompts else self.p.prompt

    @property
    def negative_prompt(self) -> str:
        return self.all_negative_prompts[0] if self.all_negative_prompts else self.p.negative_prompt

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        return infotext.create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, index=index)

    def js(self) -> str:
        """A1111's generation-info JSON (the API's ``info`` string)."""
        p = self.p
        return json.dumps({
            "prompt": self.prompt,
            "all_prompts": self.all_prompts,
            "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": p.subseed,
            "all_subseeds": self.all_subseeds,
            "subseed_strength": p.subseed_strength,
            "width": p.width,
            "height": p.height,
            "sampler_name": p.sampler_name,
            "cfg_scale": p.cfg_scale,
            "steps": p.steps,
            "batch_size": p.batch_size,
            "restore_faces": p.restore_faces,
            "face_restoration_model": None,
            "sd_model_name": p.sd_model_name,
            "sd_model_hash": p.sd_model_hash,
            "sd_vae_name": p.sd_vae_name,
            "sd_vae_hash": p.sd_vae_hash,
            "seed_resize_from_w": p.seed_resize_from_w,
            "seed_resize_from_h": p.seed_resize_from_h,
            "denoising_strength": getattr(p, "denoising_strength", None),
            "extra_generation_params": p.extra_generation_params,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
            "styles": p.styles,
            "comments": self.comments,  # warnings of the job (a LoRA not found, a failing script), as A1111
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
            "clip_skip": p.effective_clip_skip(),
            "is_using_inpainting_conditioning": bool(getattr(p.sd_model, "is_inpaint", False)),
            "version": infotext.VERSION,
        }, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------------
def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run a whole job: ``n_iter`` batches of ``batch_size`` images. A1111's public entry point."""
    _fill_runtime_defaults(p)
    if p.override_settings:
        p.opts = apply_overrides(p.opts, p.override_settings)
    try:
        return _process(p)
    finally:
        extra_networks.deactivate(p)  # e.g. LoRA off: the model is its base model again


def apply_overrides(opts: Options, overrides: dict[str, Any]) -> Options:
    """A copy of ``opts`` with a job's ``override_settings``: the global options are never touched."""
    limits.check_overrides(overrides)
    job_opts = opts.model_copy(deep=True)
    for key, value in overrides.items():
        if key == "sd_model_checkpoint":
            continue  # the caller switches models before the job starts
        job_opts.set(key, value)
    return job_opts


def _fill_runtime_defaults(p: StableDiffusionProcessing) -> None:
    if p.sd_model is None or p.opts is None or p.state is None:
        from modules import shared  # only for extensions that build p themselves

        p.sd_model = p.sd_model or shared.sd_model
        p.opts = p.opts or shared.opts
        p.state = p.state or shared.state
        if p.prompt_resources is None and shared.runtime is not None and p.sd_model is not None:
            p.prompt_resources = shared.runtime.prompt_resources(p.sd_model)
        if p.upscalers is None and shared.runtime is not None:
            p.upscalers = shared.runtime.upscalers
        if p.data_dir is None and shared.runtime is not None:
            p.data_dir = str(shared.runtime.paths.data_dir)
    if p.sd_model is None:
        raise GenerationError("no checkpoint is loaded")
    # Where this job saves, as A1111 sets them on p (scripts save their own grids there).
    p.outpath_samples = p.outpath_samples or _outdir(p, grid=False)
    p.outpath_grids = p.outpath_grids or _outdir(p, grid=True)


def _process(p: StableDiffusionProcessing) -> Processed:
    _run_hook(p, "before_process")
    model, state, opts = p.sd_model, p.state, p.opts
    t0 = time.perf_counter()
    zero_terminal_snr = noise_schedule.enabled(opts, model)
    try:  # unknown names, pairs that cannot run and an eta the sampler cannot take fail before any work
        sd_samplers.check(p.sampler_name, p.scheduler, eta=p.eta, opts=opts, zero_terminal_snr=zero_terminal_snr,
                          steps=p.steps)
        if getattr(p, "hr_sampler_name", None) or getattr(p, "hr_scheduler", None):
            sd_samplers.check(p.hr_sampler_name or p.sampler_name, p.hr_scheduler or p.scheduler, eta=p.eta, opts=opts,
                              zero_terminal_snr=zero_terminal_snr)
    except ValueError as e:
        raise GenerationError(str(e)) from None
    _check_size(p, model)
    p.setup_prompts()
    styles.apply_styles(p)
    limits.check_job(p, opts)
    p.main_prompt, p.main_negative_prompt = p.all_prompts[0], p.all_negative_prompts[0]
    if isinstance(p, StableDiffusionProcessingTxt2Img):
        p.setup_hr_prompts()
    _outdir(p, grid=False), _outdir(p, grid=True)  # a folder outside the data dir fails the job before any work
    p.init(model)
    p.extra_generation_params.update(guidance.Guidance.of(p, model).infotext_params())
    p.extra_generation_params.update(noise_schedule.infotext_params(zero_terminal_snr))
    _run_hook(p, "process")
    state.job_count = max(state.job_count, p.n_iter)
    outputs: list[Image.Image] = []
    infotexts: list[str] = []
    files: list[str] = []
    timings = {"sampling": 0.0, "decode": 0.0, "save": 0.0}
    if p.tiling is None:
        p.tiling = bool(getattr(opts, "tiling", False))
    with torch.inference_mode(), circular_padding(model, p.tiling), \
            cpu_threads.for_job(model, p.width, p.height, p.batch_size):  # 1 thread for small work
        for n in range(p.n_iter):
            if state.stopping_generation and n > 0:
                state.interrupted = True  # "Don't Interrupt in the middle": stopped after the image it was making
            if state.interrupted:
                break
            p.iteration = n
            batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts = p.all_prompts[batch], p.all_negative_prompts[batch]
            p.seeds, p.subseeds = p.all_seeds[batch], p.all_subseeds[batch]
            _run_hook(p, "before_process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds,
                      subseeds=p.subseeds)
            p.prompts = activate_extra_networks(p, p.prompts)
            _run_hook(p, "after_extra_networks_activate", batch_number=n, prompts=p.prompts, seeds=p.seeds,
                      subseeds=p.subseeds, extra_network_data=p.extra_network_data)
            _run_hook(p, "process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            conds, unconds = encode_conds(p, model, p.prompts, p.negative_prompts, p.steps)
            t = time.perf_counter()
            p._unfinished = False
            with attention.controlled(model.unet, p.attention_controllers):
                latents = p.sample_batch(model, conds, unconds, p.seeds, p.subseeds)
            timings["sampling"] += time.perf_counter() - t
            if p._unfinished:
                log.info("%s: batch %d interrupted before its last step; nothing saved for it", p.tab, n + 1)
                break
            if p.scripts is not None:
                latents = p.scripts.post_sample(p, latents)
            if state.skipped and not state.interrupted:
                state.skipped = False
            t = time.perf_counter()
            try:
                decoded = decode_to_tensor(model, latents, state)
            except DecodeInterrupted:
                break  # interrupted while decoding: the batch's pictures are incomplete, nothing kept
            timings["decode"] += time.perf_counter() - t
            if p.scripts is not None:
                decoded = p.scripts.postprocess_batches(p, decoded, batch_number=n)
            t = time.perf_counter()
            for i, image in enumerate(to_pil(decoded * 2 - 1)):
                p.batch_index = i
                image = _run_hook(p, "postprocess_image", image=image) or image
                mask_for_overlay, overlay_image = p.overlay_for(i)
                if p.scripts is not None:
                    mask_for_overlay, overlay_image = p.scripts.postprocess_maskoverlay(p, i, mask_for_overlay,
                                                                                      overlay_image)
                if p.color_corrections is not None and i < len(p.color_corrections):
                    image = apply_color_correction(p.color_corrections[i], image)
                image = p.apply_overlay(image, mask_for_overlay, overlay_image)
                image = _run_hook(p, "postprocess_image_after_composite", image=image) or image
                index = n * p.batch_size + i
                text = p.infotext(index)
                if opts.samples_save and not p.do_not_save_samples:
                    path = _outdir(p, grid=False)
                    fullfn, _ = images.save_image(image, path, "", p.all_seeds[index], p.all_prompts[index],
                                                  opts.samples_format, info=text, p=p, opts=opts)
                    files.append(fullfn)
                if opts.enable_pnginfo:
                    image.info["parameters"] = text
                if opts.samples_log_stdout:
                    print(text, flush=True)
                outputs.append(image)
                infotexts.append(text)
            timings["save"] += time.perf_counter() - t
            state.next_job()
    index_of_first_image = 0
    several = len(outputs) > 1
    if outputs and (several or not opts.grid_only_if_multiple) and (opts.return_grid or opts.grid_save) \
            and not p.do_not_save_grid:
        grid = images.image_grid(outputs, p.batch_size, rows=opts.n_rows)
        text = p.infotext(0)
        if opts.enable_pnginfo:
            grid.info["parameters"] = text
        if opts.grid_save:
            fullfn, _ = images.save_image(grid, _outdir(p, grid=True), "grid", p.all_seeds[0], p.all_prompts[0],
                                          opts.grid_format, info=text, grid=True, p=p, opts=opts,
                                          short_filename=not opts.grid_extended_filename)
            files.append(fullfn)
        if opts.return_grid and several:
            outputs.insert(0, grid)
            infotexts.insert(0, text)
            index_of_first_image = 1
    timings["total"] = time.perf_counter() - t0
    processed = Processed(p=p, images=outputs, infotexts=infotexts, seed=p.all_seeds[0], all_seeds=p.all_seeds,
                          all_subseeds=p.all_subseeds, all_prompts=p.all_prompts,
                          all_negative_prompts=p.all_negative_prompts, index_of_first_image=index_of_first_image,
                          comments="\n".join(p.comments),
                          interrupted=state.interrupted, files=files, timings=timings)
    _run_hook(p, "postprocess", processed=processed)
    log.info("%s: %d image(s) in %.2fs (sampling %.2fs, decode %.2fs, save %.2fs)", p.tab, len(infotexts),
             timings["total"], timings["sampling"], timings["decode"], timings["save"])
    return processed


@contextlib.contextmanager
def circular_padding(model: Any, enabled: bool) -> Iterator[None]:
    """Tiling: every Conv2d of the UNet and the VAE pads circularly for this job (the picture wraps around at its
    edges, so it tiles seamlessly); the modules' own padding modes are restored afterwards."""
    if not enabled:
        yield
        return
    convs = [m for part in (model.unet, model.vae) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    before = [m.padding_mode for m in convs]
    for m in convs:
        m.padding_mode = "circular"
    try:
        yield
    finally:
        for m, mode in zip(convs, before):
            m.padding_mode = mode


def _check_size(p: StableDiffusionProcessing, model: Any) -> None:
    multiple = model.vae_scale_factor
    for name in ("width", "height"):
        if getattr(p, name) % multiple:
            raise GenerationError(f"{name} must be a multiple of {multiple} for this model")


def _outdir(p: StableDiffusionProcessing, grid: bool) -> str:
    if grid:
        configured = p.outpath_grids or p.opts.outdir_grids or getattr(p.opts, f"outdir_{p.tab}_grids")
    else:
        configured = p.outpath_samples or p.opts.outdir_samples or getattr(p.opts, f"outdir_{p.tab}_samples")
    if p.data_dir:  # set by the runtime: outputs stay in the data dir, whatever a setting or a script says
        field = "outpath_grids" if grid else "outpath_samples"
        name = field if getattr(p, field) else "output directory setting"
        return str(confine(configured, p.data_dir, p.allowed_output_dirs, name))
    return configured


def _run_hook(p: StableDiffusionProcessing, name: str, **kwargs: Any) -> Any:
    """Typed call points for scripts (A1111's Script lifecycle); a failing script is reported by the runner.
    Returns the runner's answer (``postprocess_image`` gives the image to keep), None without scripts."""
    if p.scripts is not None:
        return getattr(p.scripts, name)(p, **kwargs)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Pieces of the path
# ---------------------------------------------------------------------------------------------------------------------
def conds_for(p: StableDiffusionProcessing, model: Any, prompts: list[str], negative_prompts: list[str], steps: int,
              hires_steps: int | None = None):
    """Scheduled conditioning for a batch: positives (with AND parts) and negatives.

    Extra-network tags are removed from the positive prompts and the networks they name (LoRA) made active on the
    model from here on; textual-inversion embeddings replace their trigger words and are listed as ``TI hashes``.
    ``hires_steps``: the schedules are for a hires pass of that many steps after ``steps`` first-pass steps.
    """
    return encode_conds(p, model, activate_extra_networks(p, prompts), negative_prompts, steps, hires_steps)


def activate_extra_networks(p: StableDiffusionProcessing, prompts: list[str]) -> list[str]:
    """``prompts`` without their extra-network tags; the networks they name are made active (``p.extra_network_data``
    holds what was asked)."""
    prompts, p.extra_network_data = extra_networks.parse_prompts(prompts)
    if not p.disable_extra_networks:
        extra_networks.activate(p, p.extra_network_data)
    return prompts


def encode_conds(p: StableDiffusionProcessing, model: Any, prompts: list[str], negative_prompts: list[str], steps: int,
                 hires_steps: int | None = None):
    """Scheduled conditioning of prompts whose extra-network tags are already taken out."""
    embeddings = extra_networks.EmbeddingUsage(getattr(p.prompt_resources, "embeddings", None))
    kwargs = dict(clip_skip=p.effective_clip_skip(), emphasis=p.opts.emphasis, hires_steps=hires_steps,
                  use_old_scheduling=p.opts.use_old_scheduling, embeddings=embeddings)
    conds = conditioning.encode_prompts(model, prompts, steps, **kwargs)
    unconds = conditioning.encode_prompts(model, negative_prompts, steps, negative=True, **kwargs)
    embeddings.add_hashes_to(p)
    return conds, unconds


def make_scheduler(p: StableDiffusionProcessing, model: Any, sampler_name: str | None = None,
                   scheduler_name: str | None = None, seeds: list[int] | None = None):
    """The diffusers scheduler of a pass; it is ``p.sampler`` while the pass runs (A1111)."""
    try:
        p.sampler = sd_samplers.create_scheduler(
            sampler_name or p.sampler_name, scheduler_name or p.scheduler, model.scheduler_config, eta=p.eta,
            opts=p.opts, s_churn=p.s_churn, s_tmin=p.s_tmin, s_tmax=p.s_tmax, s_noise=p.s_noise, noise_seeds=seeds,
            family=model.family, zero_terminal_snr=noise_schedule.enabled(p.opts, model))
    except ValueError as e:
        raise GenerationError(str(e)) from None
    eta_ancestral = getattr(p.sampler, "eta_ancestral", None)
    if eta_ancestral is not None:
        p.extra_generation_params["Eta"] = eta_ancestral  # A1111 writes an ancestral eta other than 1
    return p.sampler


def add_extra_noise(p: StableDiffusionProcessing, x: torch.Tensor, xi: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """img2img / hires: the noised start ``xi`` of the init latents ``x`` gets ``opts.img2img_extra_noise`` times more
    noise; ``on_extra_noise`` callbacks may replace that noise first (A1111)."""
    amount = p.opts.img2img_extra_noise
    if amount <= 0:
        return xi
    p.extra_generation_params["Extra noise"] = amount
    params = script_callbacks.ExtraNoiseParams(noise, x, xi)
    script_callbacks.extra_noise_callback(params)
    return xi + params.noise * amount


def step_generators(p: StableDiffusionProcessing, seeds: list[int], shape: tuple[int, ...]) -> list[torch.Generator]:
    """Per-image generators for the sampler's own noise (ancestral / SDE samplers), continuing each image's seed."""
    delta = p.opts.eta_noise_seed_delta
    if delta and sd_samplers.uses_ensd(p.sampler_name):
        p.extra_generation_params["ENSD"] = delta
    return rng.generators(seeds, shape, eta_noise_seed_delta=delta)


def img2img_timesteps(scheduler, steps: int, strength: float, fix_steps: bool, device) -> torch.Tensor:
    """The tail of the schedule that img2img runs: ``steps*strength`` steps, or exactly ``steps`` with fix_steps."""
    if fix_steps and strength > 0:
        total = min(int(steps / strength), 1000)
        scheduler.set_timesteps(total, device=device)
        run = min(steps, total)
    else:
        scheduler.set_timesteps(steps, device=device)
        total, run = steps, min(int(steps * strength), steps)
    start = (total - run) * scheduler.order
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return timesteps


def sample(model: Any, scheduler, latents: torch.Tensor, timesteps: torch.Tensor, conds, unconds,
           p: StableDiffusionProcessing, *, generators: list[torch.Generator],
           image_conditioning: torch.Tensor | None = None, inpaint: tuple | None = None) -> torch.Tensor:
    """The denoising loop: CFG over (AND-)conditionings, per-step prompt schedules, interrupt/skip, previews."""
    state: JobState = p.state
    state.sampling_steps = len(timesteps)
    previews = live_previews.Previewer(model, p.opts, state, (p.width, p.height), _vae_approx_dir(p))
    step_kwargs = {"generator": generators} if _accepts_generator(scheduler) else {}
    adjust = guidance.Guidance.of(p, model)
    for i, t in enumerate(tqdm(timesteps, desc=f"{p.tab} {p.iteration + 1}/{p.n_iter}", leave=False,
                               disable=len(timesteps) <= 1 or not _console())):  # no bar into logs
        if state.interrupted or state.skipped:
            if state.interrupted:
                p._unfinished = True  # a half-denoised batch: not an image to save or count as done
            break
        x_in = scheduler.scale_model_input(latents, t)
        if image_conditioning is not None:
            x_in = torch.cat([x_in, image_conditioning], dim=1)
        noise_pred = cfg_denoise(model, x_in, t, conds.at_step(i), unconds.at_step(i), p.cfg_scale,
                                 (p.height, p.width), step=i, total_steps=len(timesteps), scheduler=scheduler,
                                 adjust=adjust, attention_controllers=p.attention_controllers)
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
        if inpaint is not None:
            mask, init_latents, noise = inpaint
            final = i + 1 == len(timesteps)
            if not final:
                init_latents = scheduler.add_noise(init_latents, noise, timesteps[i + 1:i + 2])
            blended = init_latents * (1 - mask) + latents * mask
            if p.scripts is not None:
                blended = p.scripts.on_mask_blend(p, latents, mask, init_latents, blended, None if final else model,
                                                  None if final else _step_sigma(scheduler, t))
            latents = blended
        state.sampling_step = i + 1
        previews.step(i, len(timesteps), latents)
    previews.finish()
    return latents


def _vae_approx_dir(p: StableDiffusionProcessing):
    from modules.paths import Paths

    return Paths.from_args(data_dir=p.data_dir).vae_approx_dir


def _console() -> bool:
    """Whether a console progress bar is shown: only on a terminal (a log file or pipe gets none)."""
    return sys.stderr is not None and sys.stderr.isatty()


@functools.lru_cache(maxsize=None)
def _step_takes_generator(scheduler_class: type) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler_class.step).parameters


def _accepts_generator(scheduler) -> bool:
    return _step_takes_generator(type(scheduler))


def cfg_denoise(model: Any, x: torch.Tensor, t: torch.Tensor, cond_parts: list[list[tuple[Any, float]]],
                unconds: list[list[tuple[Any, float]]], cfg_scale: float, size: tuple[int, int], *, step: int = 0,
                total_steps: int = 0, scheduler: Any = None, adjust: guidance.Guidance | None = None,
                attention_controllers: list[Any] = ()) -> torch.Tensor:
    """One UNet call for every AND part of every image plus the negatives, combined as composable diffusion:
    ``uncond + Σ wᵢ·cfg·(condᵢ − uncond)``, then ``adjust`` (CFG rescale, dynamic thresholding). Registered
    ``script_callbacks.on_cfg_*`` callbacks see (and may replace) the UNet's inputs, its output and the combined
    prediction of sampling step ``step`` of ``total_steps``; ``attention_controllers`` (``modules.attention``) see the attention of this call and the combined prediction."""
    xs, conds_flat = [], []
    for i, parts in enumerate(cond_parts):
        for cond, _ in parts:
            xs.append(x[i])
            conds_flat.append(cond)
    n_cond = len(conds_flat)
    skip_uncond = cfg_scale == 1.0 and all(len(parts) == 1 and w == 1.0 for parts in cond_parts for _, w in parts)
    if not skip_uncond:
        xs.extend(x)
        conds_flat.extend(parts[0][0] for parts in unconds)
    embeds, pooled = conditioning.stack_conds(conds_flat)
    x_batch = torch.stack(xs)
    hooked = script_callbacks.cfg_callbacks_active()
    if hooked:
        x_batch, embeds = _cfg_denoiser_callbacks(model, x_batch, embeds, n_cond, t, scheduler, step, total_steps)
    added = _sdxl_added_cond(model, pooled, size, x_batch.shape[0]) if model.is_sdxl else None
    call, unet_kwargs = (attention.unet_call_kwargs(cond_parts, x_batch.shape[0], x.shape[-2:], step, total_steps)
                         if attention_controllers else (None, {}))
    out = model.unet(x_batch, t, encoder_hidden_states=embeds.to(x_batch.dtype), added_cond_kwargs=added,
                     **unet_kwargs).sample
    if hooked:
        denoised = script_callbacks.CFGDenoisedParams(out, step, total_steps, model.unet)
        script_callbacks.cfg_denoised_callback(denoised)
        out = denoised.x
    if skip_uncond:
        out = attention.after_cfg(attention_controllers, call, out) if call is not None else out
        return _after_cfg_callbacks(out, step, total_steps) if hooked else out
    out_cond, out_uncond = out[:n_cond], out[n_cond:]
    result = out_uncond.clone()
    k = 0
    for i, parts in enumerate(cond_parts):
        for _, weight in parts:
            result[i] += (out_cond[k] - out_uncond[i]) * (weight * cfg_scale)
            k += 1
    if adjust is not None and adjust.active:
        sigma = _step_sigma(scheduler, t).to(x.device) if scheduler is not None else None
        result = adjust.apply(result, out_uncond, cfg_scale, x, sigma)
    if call is not None:
        result = attention.after_cfg(attention_controllers, call, result)
    return _after_cfg_callbacks(result, step, total_steps) if hooked else result


def _cfg_denoiser_callbacks(model: Any, x_batch: torch.Tensor, embeds: torch.Tensor, n_cond: int, t: torch.Tensor,
                            scheduler: Any, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``on_cfg_denoiser``: callbacks may replace the latent input, the inpainting channels and the embeddings."""
    channels = model.vae.config.latent_channels
    image_cond = x_batch[:, channels:] if x_batch.shape[1] > channels else None
    sigma = _step_sigma(scheduler, t).to(x_batch.device).expand(x_batch.shape[0]) if scheduler is not None else None
    params = script_callbacks.CFGDenoiserParams(x_batch[:, :channels], image_cond, sigma, step, total_steps,
                                                embeds[:n_cond], embeds[n_cond:], model)
    script_callbacks.cfg_denoiser_callback(params)
    x = params.x if params.image_cond is None else torch.cat([params.x, params.image_cond], dim=1)
    return x, torch.cat([params.text_cond, params.text_uncond])


def _after_cfg_callbacks(x: torch.Tensor, step: int, total_steps: int) -> torch.Tensor:
    params = script_callbacks.AfterCFGCallbackParams(x, step, total_steps)
    script_callbacks.cfg_after_cfg_callback(params)
    return params.x


def _step_sigma(scheduler: Any, t: torch.Tensor) -> torch.Tensor:
    """The noise level of the current step as k-diffusion's sigma, ``sqrt((1-ᾱ)/ᾱ)``."""
    index = getattr(scheduler, "step_index", None)
    if index is not None and getattr(scheduler, "sigmas", None) is not None:
        return scheduler.sigmas[index].reshape(())
    alpha = scheduler.alphas_cumprod[int(t)]
    return ((1 - alpha) / alpha) ** 0.5


def _sdxl_added_cond(model: Any, pooled: torch.Tensor, size: tuple[int, int], n: int) -> dict[str, torch.Tensor]:
    h, w = size
    if model.family == "sdxl-refiner":
        time_ids = [h, w, 0, 0, 6.0]   # aesthetic score as SDXL's refiner expects
    else:
        time_ids = [h, w, 0, 0, h, w]
    ids = torch.tensor([time_ids] * n, dtype=pooled.dtype, device=pooled.device)
    return {"text_embeds": pooled, "time_ids": ids}


def encode_images(model: Any, pictures: list[Image.Image]) -> torch.Tensor:
    """Pixels -> scaled latents (the distribution's mean, so img2img is deterministic for a seed)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for im in pictures])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(model.device, model.vae.dtype)
    latents = model.vae.encode(x).latent_dist.mode()
    shift = getattr(model.vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * model.vae.config.scaling_factor


class DecodeInterrupted(Exception):
    """The job was interrupted during a VAE decode: the decode stopped, its images are incomplete."""


DECODE_TILE = 64
"""Latents larger than DECODE_TILE² × 4 (SD above 1024², the 64-px default model above 256²) are decoded in
overlapping DECODE_TILE² tiles (diffusers' tiled decode): the VAE's attention grows with the square of the latent
area, so a whole 1024² decode of the default model took minutes and all its memory; tiles keep it linear."""


def decode_latents(model: Any, latents: torch.Tensor, state: JobState | None = None) -> list[Image.Image]:
    """Latents -> pictures (see ``decode_to_tensor``)."""
    return to_pil(decode_to_tensor(model, latents, state) * 2 - 1)


def decode_to_tensor(model: Any, latents: torch.Tensor, state: JobState | None = None) -> torch.Tensor:
    """Latents -> pixels as A1111's scripts see a batch: ``[B, 3, H, W]`` float in 0..1. With the job's ``state`` the
    decode stops (``DecodeInterrupted``) within one VAE block or tile of an interrupt: the batch is decoded one image
    at a time and every decoder block checks first."""
    vae = model.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = latents.to(vae.dtype) / vae.config.scaling_factor + shift

    def check(*_: Any) -> None:
        if state is not None and state.interrupted:
            raise DecodeInterrupted

    tiled = latents.shape[-1] * latents.shape[-2] > 4 * DECODE_TILE**2 and hasattr(vae, "tile_latent_min_size")
    if tiled:
        tiling = vae.use_tiling, vae.tile_latent_min_size, vae.tile_sample_min_size
        vae.use_tiling, vae.tile_latent_min_size = True, DECODE_TILE
        vae.tile_sample_min_size = DECODE_TILE * model.vae_scale_factor
    hooks = [m.register_forward_pre_hook(check) for m in _decoder_blocks(vae)] if state is not None else []
    try:
        pixels = []
        for batch in latents.split(1 if state is not None else len(latents)):
            check()
            pixels.append(vae.decode(batch).sample)
        return ((torch.cat(pixels).float() + 1) / 2).clamp(0, 1)
    finally:
        if tiled:
            vae.use_tiling, vae.tile_latent_min_size, vae.tile_sample_min_size = tiling
        for hook in hooks:
            hook.remove()


_blocks_of: "weakref.WeakKeyDictionary[torch.nn.Module, list[torch.nn.Module]]" = weakref.WeakKeyDictionary()


def _decoder_blocks(vae: Any) -> list[torch.nn.Module]:
    """The VAE decoder's blocks that check for an interrupt before they run (listed once per VAE)."""
    blocks = _blocks_of.get(vae)
    if blocks is None:
        blocks = _blocks_of[vae] = [m for m in vae.decoder.modules()
                                    if type(m).__name__.endswith(("Block2D", "Upsample2D"))]
    return blocks


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def _blank_inpaint_conditioning(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """A 9-channel inpainting UNet used for plain generation: the whole image is masked."""
    b, _, h, w = latents.shape
    mask = torch.ones((b, 1, h, w), device=latents.device, dtype=latents.dtype)
    masked = torch.zeros((b, 4, h, w), device=latents.device, dtype=latents.dtype)
    return torch.cat([mask, masked], dim=1)


def _inpaint_conditioning(model: Any, pictures: list[Image.Image], mask: Image.Image) -> torch.Tensor:
    """Mask and masked-image latents for a 9-channel inpainting UNet (diffusers' channel order: mask, masked image)."""
    m = np.asarray(mask.convert("L"), dtype=np.float32)[None, :, :, None] / 255.0
    keep = [Image.fromarray((np.asarray(im, dtype=np.float32) * (1 - m[0])).astype(np.uint8)) for im in pictures]
    masked_latents = encode_images(model, keep)
    latent_mask = masking.latent_mask(mask, tuple(masked_latents.shape[2:])).to(masked_latents)
    latent_mask = latent_mask.expand(len(pictures), 1, *masked_latents.shape[2:])
    return torch.cat([latent_mask, masked_latents], dim=1)
