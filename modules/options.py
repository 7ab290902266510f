"""Settings: one pydantic model with A1111's option names, persisted to ``config.json``.

Only option keys are ever saved: the app's own fields and the keys extensions registered (``extra_known_keys``).
A key in ``config.json`` that neither knows is reported at load and ignored: it is not applied, not listed by
``public_values`` (``GET /options``) and cannot be set, but it is written back unchanged, so the settings of an
extension that is disabled today survive. Keys starting with ``_`` are never read or written (an old version wrote
its file path as ``_path``). A value that does not validate is reported and its default used, so a hand-edited
config can never stop the app from starting.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from collections.abc import MutableSet
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

log = logging.getLogger(__name__)


class Options(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    # Keys of options that extensions register (``shared.opts.add_option`` adds them): known like the fields above.
    extra_known_keys: ClassVar[MutableSet[str]] = set()
    _path: Path | None = PrivateAttr(None)
    _ignored: MutableSet[str] = PrivateAttr(default_factory=set)   # unknown keys read from the file

    # Stable Diffusion
    sd_model_checkpoint: str = Field("", description="Stable Diffusion checkpoint")
    sd_checkpoints_limit: int = Field(1, ge=1, le=10, description="Maximum number of checkpoints loaded at the same time")
    sd_vae: str = Field("Automatic", description="SD VAE")
    batch_compatible_jobs: int = Field(4, ge=1, le=64, description="Batch compatible jobs: queued txt2img jobs with the same model, size, sampler, schedule, steps and CFG are sampled together, up to this many (1 = off)")
    CLIP_stop_at_last_layers: int = Field(1, ge=1, le=12, description="Clip skip")
    emphasis: Literal["Original", "No norm", "None"] = Field("Original", description="Emphasis mode")
    use_old_scheduling: bool = Field(False, description="Use old prompt editing timelines")
    randn_source: Literal["CPU"] = Field("CPU", description="Random number generator source (noise is always made on the CPU so seeds reproduce on every device)")
    eta_noise_seed_delta: int = Field(0, ge=0, description="Eta noise seed delta (ENSD)")
    initial_noise_multiplier: float = Field(1.0, ge=0.0, le=1.5, description="Noise multiplier for img2img")
    tiling: bool = Field(False, description="Tiling (images that tile seamlessly; a request's tiling wins)")
    img2img_fix_steps: bool = Field(False, description="With img2img, do exactly the amount of steps the slider specifies")
    img2img_extra_noise: float = Field(0.0, ge=0.0, le=1.0, description="Extra noise multiplier for img2img and hires fix")
    img2img_color_correction: bool = Field(False, description="Apply color correction to img2img results to match original colors")
    img2img_background_color: str = Field("#ffffff", description="With img2img, fill transparent parts of the input image with this color")
    overlay_inpaint: bool = Field(True, description="Overlay original for inpaint")
    # Sampler parameters
    eta_ancestral: float = Field(1.0, ge=0.0, le=1.0, description="Eta for k-diffusion samplers")
    eta_ddim: float = Field(0.0, ge=0.0, le=1.0, description="Eta for DDIM")
    s_churn: float = Field(0.0, ge=0.0, le=100.0, description="sigma churn")
    s_tmin: float = Field(0.0, ge=0.0, le=10.0, description="sigma tmin")
    s_tmax: float = Field(0.0, ge=0.0, le=999.0, description="sigma tmax")
    s_noise: float = Field(1.0, ge=0.0, le=1.1, description="sigma noise")
    sd_noise_schedule: Literal["Default", "Zero Terminal SNR"] = Field("Default", description="Noise schedule for sampling (Zero Terminal SNR: for models trained with it; those marked so use it by themselves)")
    # Saving images
    samples_save: bool = Field(True, description="Always save all generated images")
    samples_format: Literal["png", "jpg", "jpeg", "webp"] = Field("png", description="File format for images")
    grid_save: bool = Field(True, description="Always save all generated image grids")
    grid_format: Literal["png", "jpg", "jpeg", "webp"] = Field("png", description="File format for grids")
    grid_extended_filename: bool = Field(False, description="Add extended info (seed, prompt) to filename when saving grid")
    grid_only_if_multiple: bool = Field(True, description="Do not save grids consisting of one picture")
    return_grid: bool = Field(True, description="Show grid in gallery")
    enable_pnginfo: bool = Field(True, description="Save text information about generation parameters as chunks to png files")
    jpeg_quality: int = Field(80, ge=1, le=100, description="Quality for saved jpeg and webp images")
    save_to_dirs: bool = Field(True, description="Save images to a subdirectory")
    directories_filename_pattern: str = Field("[date]", description="Directory name pattern")
    outdir_samples: str = Field("", description="Output directory for images; if empty, defaults to three directories below")
    outdir_txt2img_samples: str = Field("outputs/txt2img-images", description="Output directory for txt2img images")
    outdir_img2img_samples: str = Field("outputs/img2img-images", description="Output directory for img2img images")
    outdir_extras_samples: str = Field("outputs/extras-images", description="Output directory for images from extras tab")
    outdir_grids: str = Field("", description="Output directory for grids; if empty, defaults to two directories below")
    outdir_txt2img_grids: str = Field("outputs/txt2img-grids", description="Output directory for txt2img grids")
    outdir_img2img_grids: str = Field("outputs/img2img-grids", description="Output directory for img2img grids")
    # More of A1111's settings, each with its effect here (sections: modules/a1111/settings_catalog.py)
    samples_filename_pattern: str = Field("", description="Image file name pattern, e.g. [seed]-[prompt_words] (empty: A1111's default names)")
    save_images_add_number: bool = Field(True, description="Start image file names with a running number")
    n_rows: int = Field(-1, ge=-1, le=16, description="Rows of image grids (-1: about square, 0: the batch size)")
    save_txt: bool = Field(False, description="Also write the infotext to a .txt file beside every image")
    webp_lossless: bool = Field(False, description="Save webp images losslessly")
    export_for_4chan: bool = Field(True, description="Also save a JPG copy of a large image (over the two limits below)")
    img_downscale_threshold: float = Field(4.0, ge=0.0, description="File size, in MB, above which a JPG copy is saved")
    target_side_length: int = Field(4000, ge=1, le=65535, description="Width or height, in pixels, above which a JPG copy is saved (and scaled down to)")
    grid_save_to_dirs: bool = Field(True, description="Save grids into the subdirectory too")
    directories_max_prompt_words: int = Field(8, ge=1, le=20, description="Words of the prompt that [prompt_words] uses")
    samples_log_stdout: bool = Field(False, description="Print the infotext of every image made to standard output")
    add_model_name_to_info: bool = Field(True, description="Write the model name into the infotext")
    add_model_hash_to_info: bool = Field(True, description="Write the model hash into the infotext")
    add_vae_name_to_info: bool = Field(True, description="Write the VAE name into the infotext")
    add_vae_hash_to_info: bool = Field(True, description="Write the VAE hash into the infotext")
    add_version_to_infotext: bool = Field(True, description="Write the program version into the infotext")
    send_seed: bool = Field(True, description="Send the seed along when sending parameters to txt2img/img2img")
    send_size: bool = Field(True, description="Send the width and height along when sending parameters to txt2img/img2img")
    do_not_show_images: bool = Field(False, description="Show no images in the result gallery (they are still saved)")
    hidden_tabs: list[str] = Field(default_factory=list, description="Top tabs to hide (after a restart of the app)")
    hide_samplers: list[str] = Field(default_factory=list, description="Samplers left out of the sampler dropdowns (after a restart of the app)")
    disable_token_counters: bool = Field(False, description="Hide the N/75 token counters of the prompt boxes (after a restart of the app)")
    show_progressbar: bool = Field(True, description="Show the progress line while a job runs")
    keyedit_precision_attention: float = Field(0.1, ge=0.01, le=0.2, description="Step of Ctrl+Up/Down on (words:1.1)")
    keyedit_precision_extra: float = Field(0.05, ge=0.01, le=0.2, description="Step of Ctrl+Up/Down on <lora:name:0.9>")
    keyedit_delimiters: str = Field(".,\\/!?%^*;:{}=`~() ", description="Characters that end a word for Ctrl+Up/Down")
    extra_networks_default_multiplier: float = Field(1.0, ge=0.0, le=2.0, description="Weight written into the prompt when an extra-network card is clicked")
    extra_networks_add_text_separator: str = Field(" ", description="Text put before a <lora:...> tag added from a card")
    # Upscaling
    ESRGAN_tile: int = Field(192, ge=0, le=512, description="Tile size for upscaler models. 0 = no tiling")
    ESRGAN_tile_overlap: int = Field(8, ge=0, le=48, description="Tile overlap for upscaler models, in pixels")
    # Live previews / UI
    live_previews_enable: bool = Field(True, description="Show live previews of the created image")
    show_progress_every_n_steps: int = Field(5, ge=-1, le=32, description="Live preview display period (steps)")
    show_progress_type: Literal["Full", "Approx NN", "Approx cheap", "TAESD"] = Field(
        "Approx cheap", description="Live preview method (Full: VAE decode on a background thread; Approx cheap: "
        "linear map, nearly free; TAESD / Approx NN: the tiny VAE from models/VAE-approx when installed, else cheap)")
    interrupt_after_current: bool = Field(True, description="Don't Interrupt in the middle")
    quicksettings_list: list[str] = Field(default_factory=lambda: ["sd_model_checkpoint"], description="Settings shown at the top of the page (after a restart of the app)")
    # Limits that protect the machine (modules.limits); a job over one is refused with a message naming it.
    # They are the server's: override_settings cannot change them.
    limit_max_pixels: int = Field(2048 * 2048, ge=64 * 64, le=16384 * 16384, description="Largest image of any pass, hires fix included (width × height pixels)")
    limit_images_per_job: int = Field(1000, ge=1, le=100000, description="Most images in one job (batch count × batch size)")
    limit_init_images: int = Field(16, ge=1, le=1000, description="Most init images in one img2img request")
    limit_input_pixels: int = Field(4096 * 4096 * 2, ge=64 * 64, le=2**31, description="Most decoded pixels of all images in one request together")
    limit_prompt_tokens: int = Field(1000, ge=75, le=100000, description="Longest prompt, in CLIP tokens")
    limit_and_parts: int = Field(20, ge=1, le=1000, description="Most AND parts in one prompt")
    # Extensions
    disabled_extensions: list[str] = Field(default_factory=list, description="Disabled extensions")
    localization: str = Field("None", description="Localization: the name of a localizations/*.json of an extension, or None (requires restart)")

    # -- persistence ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> "Options":
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("top level is not an object")
            except (OSError, ValueError) as e:
                log.error("Settings file %s is unreadable (%s); using defaults", path, e)
                data = {}
        private = sorted(k for k in data if k.startswith("_"))
        if private:
            log.warning("Settings file %s: dropping %s (not settings)", path, ", ".join(map(repr, private)))
            data = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = {k for k in data if not cls.is_known(k)}
        if unknown:
            log.warning("Settings file %s: %s %s no setting of this app or its extensions; ignored (kept in the "
                        "file for an extension that may register it)", path, ", ".join(map(repr, sorted(unknown))),
                        "is" if len(unknown) == 1 else "are")
        try:
            opts = cls.model_validate(data)
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            for key in sorted(bad):
                log.error("Setting %r in %s is invalid (%r); using its default", key, path, data.get(key))
            opts = cls.model_validate({k: v for k, v in data.items() if k not in bad})
        opts._path = path
        opts._ignored = unknown
        return opts

    @classmethod
    def is_known(cls, key: str) -> bool:
        """An option key: one of the fields, or registered by an extension."""
        return key in cls.model_fields or key in cls.extra_known_keys

    def _is_ignored(self, key: str) -> bool:
        return key in self._ignored and not self.is_known(key)

    def public_values(self) -> dict[str, Any]:
        """Every option value by key (JSON types), without the ignored keys: what ``GET /options`` shows (with the
        A1111 settings whose value is fixed here)."""
        from modules.a1111 import settings_catalog

        values = {k: v for k, v in self.model_dump(mode="json").items() if not self._is_ignored(k)}
        return {**settings_catalog.fixed_values(), **values}

    def save(self, path: Path | None = None) -> None:
        path = path or self._path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            values = {k: v for k, v in self.model_dump(mode="json").items() if not k.startswith("_")}
            json.dump(values, f, indent=4, ensure_ascii=False)
        os.replace(tmp, path)

    def set(self, key: str, value: Any) -> None:
        """Validate and assign one option; raises ``ValueError`` naming the option when the value is bad."""
        if (key not in type(self).model_fields and key not in (self.model_extra or {})) or self._is_ignored(key):
            from modules.a1111 import settings_catalog

            if key in settings_catalog.FIXED or key in settings_catalog.REFUSED:
                why = settings_catalog.refusal(key, value)
                if why is None:
                    return        # an A1111 setting given the value that describes this web UI: nothing to change
                raise ValueError(why)
            raise ValueError(f"unknown option {key!r}")
        try:
            setattr(self, key, value)
        except ValidationError as e:
            raise ValueError(f"invalid value for option {key!r}: {e.errors()[0]['msg']}") from None

    # -- A1111 facade ----------------------------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, Any]:
        return self.model_dump()

    def get_default(self, key: str) -> Any:
        field = type(self).model_fields.get(key)
        return field.get_default(call_default_factory=True) if field else None
