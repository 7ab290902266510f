"""A1111's ``modules.upscaler``: ``Upscaler`` / ``UpscalerData`` (the records of ``shared.sd_upscalers``) and its
PIL upscalers, from ``modules.upscalers``."""
from __future__ import annotations

from PIL import Image

from modules.upscalers import Upscaler, UpscalerData, UpscalerNone, UpscalerResample

__all__ = ["Upscaler", "UpscalerData", "UpscalerNone", "UpscalerLanczos", "UpscalerNearest"]


class UpscalerLanczos(UpscalerResample):
    def __init__(self, dirname: str | None = None) -> None:
        super().__init__("Lanczos", Image.Resampling.LANCZOS)


class UpscalerNearest(UpscalerResample):
    def __init__(self, dirname: str | None = None) -> None:
        super().__init__("Nearest", Image.Resampling.NEAREST)
