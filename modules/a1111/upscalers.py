"""``shared.sd_upscalers``: the running app's upscaler list (``modules.upscalers``: None, Lanczos, Nearest and the
upscaler model files), read afresh so that a model file dropped in ``models/ESRGAN`` shows without a restart."""
from __future__ import annotations

from modules.upscalers import UpscalerData, UpscalerRegistry


def source() -> list[UpscalerData]:
    """What ``shared.sd_upscalers`` is."""
    from modules import shared

    runtime = shared.runtime
    return runtime.upscalers.list() if runtime is not None else UpscalerRegistry({}).list()
