"""A1111's ``modules.upscaler``: ``Upscaler`` / ``UpscalerData`` (the records of ``shared.sd_upscalers``)."""
from modules.a1111.upscalers import PILUpscaler as UpscalerLanczos  # noqa: F401 - A1111 names
from modules.a1111.upscalers import PILUpscaler as Upscaler  # noqa: F401
from modules.a1111.upscalers import UpscalerData  # noqa: F401
