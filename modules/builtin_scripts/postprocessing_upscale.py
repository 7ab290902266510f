"""Upscale (Extras tab): scale by a factor or to a size (optionally cropped to it), with upscaler 1 and a blend of
upscaler 2 at its visibility. The app's Extras upscaling *is* this script, on the public ``ScriptPostprocessing``
contract, with A1111's arg names (``upscale_mode`` 0 scale by / 1 scale to, ``upscale_by``, ``upscale_to_width`` ...),
which the extras API fills from its request fields.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from modules import shared
from modules.scripts_postprocessing import PostprocessedImage, ScriptPostprocessing
from modules.upscalers import MAX_SCALE, UpscalerError


def _find(name: str | None, field: str) -> Any:
    """The upscaler called ``name`` (None for "None" or no name)."""
    if not name or name == "None":
        return None
    for upscaler in shared.sd_upscalers:
        if upscaler.name == name:
            return upscaler
    raise UpscalerError(f"{field}: could not find upscaler named {name!r}")


def fit_inside(width: int, height: int, limit: int) -> tuple[int, int]:
    """``width`` x ``height`` shrunk (keeping its aspect) so that neither side exceeds ``limit`` (0: no limit)."""
    if limit <= 0 or max(width, height) <= limit:
        return width, height
    if height > width:
        return max(1, limit * width // height), limit
    return limit, max(1, limit * height // width)


class ScriptPostprocessingUpscale(ScriptPostprocessing):
    name = "Upscale"
    order = 1000

    def ui(self) -> dict[str, Any]:
        names = [u.name for u in shared.sd_upscalers]
        mode = gr.Number(value=0, visible=False, precision=0, elem_id="extras_upscale_mode")
        enabled = gr.Checkbox(value=True, label="Upscale", elem_id="extras_upscale_enabled")
        with gr.Row():
            upscaler_1 = gr.Dropdown(names, value=names[0], label="Upscaler 1", elem_id="extras_upscaler_1")
        with gr.Row():
            upscaler_2 = gr.Dropdown(names, value=names[0], label="Upscaler 2", elem_id="extras_upscaler_2")
            visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                   elem_id="extras_upscaler_2_visibility")
        with gr.Tabs(elem_id="extras_resize_mode"):
            with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as scale_by_tab:
                with gr.Row():
                    upscale_by = gr.Slider(1.0, MAX_SCALE, value=2.0, step=0.05, label="Resize",
                                           elem_id="extras_upscaling_resize")
                    max_side = gr.Number(value=0, precision=0, minimum=0, label="Max side length (0: no limit)",
                                         elem_id="extras_upscale_max_side_length")
            with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as scale_to_tab:
                with gr.Row():
                    width = gr.Slider(64, 8192, value=512, step=8, label="Width", elem_id="extras_upscaling_resize_w")
                    height = gr.Slider(64, 8192, value=512, step=8, label="Height",
                                       elem_id="extras_upscaling_resize_h")
                    crop = gr.Checkbox(value=True, label="Crop to fit", elem_id="extras_upscaling_crop")
        scale_by_tab.select(lambda: 0, None, mode, queue=False)
        scale_to_tab.select(lambda: 1, None, mode, queue=False)
        return {"upscale_enabled": enabled, "upscale_mode": mode, "upscale_by": upscale_by,
                "max_side_length": max_side, "upscale_to_width": width, "upscale_to_height": height,
                "upscale_crop": crop, "upscaler_1_name": upscaler_1, "upscaler_2_name": upscaler_2,
                "upscaler_2_visibility": visibility}

    @staticmethod
    def _plan(image: Image.Image, upscale_mode: int, upscale_by: float, max_side_length: int, width: int,
              height: int, crop: bool) -> tuple[float, tuple[int, int] | None, dict[str, Any]]:
        """(factor to upscale by, final size to crop to or None, infotext entries)."""
        if int(upscale_mode) == 1:
            if width <= 0 or height <= 0:
                raise UpscalerError(f"upscale_to_width/height must be positive (got {width}x{height})")
            factor = max(width / image.width, height / image.height)
            info = {"Postprocess upscale to": f"{width}x{height}"}
            return factor, ((int(width), int(height)) if crop else None), info
        info: dict[str, Any] = {"Postprocess upscale by": upscale_by}
        target = (int(image.width * upscale_by), int(image.height * upscale_by))
        limited = fit_inside(*target, int(max_side_length or 0))
        if limited != target:
            info["Max side length"] = max_side_length
            return max(limited[0] / image.width, limited[1] / image.height), None, info
        return upscale_by, None, info

    def process_firstpass(self, pp: PostprocessedImage, upscale_enabled: bool = True, upscale_mode: int = 0,
                          upscale_by: float = 2.0, max_side_length: int = 0, upscale_to_width: int = 512,
                          upscale_to_height: int = 512, upscale_crop: bool = True, **_: Any) -> None:
        if not upscale_enabled:
            return
        if int(upscale_mode) == 1:
            pp.shared.target_width, pp.shared.target_height = int(upscale_to_width), int(upscale_to_height)
        else:
            pp.shared.target_width, pp.shared.target_height = fit_inside(
                int(pp.image.width * upscale_by), int(pp.image.height * upscale_by), int(max_side_length or 0))

    def process(self, pp: PostprocessedImage, upscale_enabled: bool = True, upscale_mode: int = 0,
                upscale_by: float = 2.0, max_side_length: int = 0, upscale_to_width: int = 512,
                upscale_to_height: int = 512, upscale_crop: bool = True, upscaler_1_name: str | None = None,
                upscaler_2_name: str | None = None, upscaler_2_visibility: float = 0.0) -> None:
        if not upscale_enabled:
            return
        first = _find(upscaler_1_name, "upscaler_1")
        second = _find(upscaler_2_name, "upscaler_2")
        if first is None:
            return
        factor, crop_to, info = self._plan(pp.image, upscale_mode, upscale_by, max_side_length, upscale_to_width,
                                           upscale_to_height, upscale_crop)
        result = self._upscale(pp.image, first, factor, crop_to)
        info["Postprocess upscaler"] = first.name
        if second is not None and upscaler_2_visibility > 0:
            other = self._upscale(pp.image, second, factor, crop_to).convert(result.mode)
            if other.size != result.size:
                other = other.resize(result.size, Image.Resampling.LANCZOS)
            result = Image.blend(result, other, float(upscaler_2_visibility))
            info["Postprocess upscaler 2"] = second.name
        if crop_to is not None:
            info["Postprocess crop to"] = f"{result.width}x{result.height}"
        pp.info.update(info)
        pp.image = result

    @staticmethod
    def _upscale(image: Image.Image, upscaler: Any, factor: float, crop_to: tuple[int, int] | None) -> Image.Image:
        result = upscaler.scaler.upscale(image, factor, upscaler.data_path)
        if crop_to is None:
            return result
        # cover the target size (the upscaler rounds down to multiples of 8), then cut the centre out
        width, height = crop_to
        cover = max(width / result.width, height / result.height)
        if cover > 1:
            result = result.resize((round(result.width * cover + 0.5), round(result.height * cover + 0.5)),
                                   Image.Resampling.LANCZOS)
        left, top = (result.width - width) // 2, (result.height - height) // 2
        return result.crop((left, top, left + width, top + height))
