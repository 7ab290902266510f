"""The default ``shared.sd_upscalers``: A1111's ``UpscalerData``-like records for the PIL upscalers (None, Lanczos,
Nearest). The Extras/upscaler work replaces ``source()`` with the full registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class PILUpscaler:
    """An upscaler that resizes with one PIL filter (None: returns the image unchanged)."""

    def __init__(self, name: str, resample: Image.Resampling | None) -> None:
        self.name = name
        self.resample = resample
        self.scalers: list[UpscalerData] = []

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        if self.resample is None:
            return img
        size = (int(img.width * scale), int(img.height * scale))
        return img.resize(size, resample=self.resample)


@dataclass
class UpscalerData:
    name: str
    data_path: str | None
    scale: float = 4
    scaler: Any = None
    model: Any = None
    model_path: str | None = None
    local_data_path: str | None = field(default=None)

    def __post_init__(self) -> None:
        self.local_data_path = self.local_data_path or self.data_path
        if self.scaler is not None:
            self.scaler.scalers.append(self)


def _default() -> list[UpscalerData]:
    return [UpscalerData("None", None, 4, PILUpscaler("None", None)),
            UpscalerData("Lanczos", None, 4, PILUpscaler("Lanczos", Image.Resampling.LANCZOS)),
            UpscalerData("Nearest", None, 4, PILUpscaler("Nearest", Image.Resampling.NEAREST))]


_upscalers: list[UpscalerData] | None = None


def source() -> list[UpscalerData]:
    """What ``shared.sd_upscalers`` is."""
    global _upscalers
    if _upscalers is None:
        _upscalers = _default()
    return _upscalers
