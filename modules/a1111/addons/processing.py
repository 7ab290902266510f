"""A1111 names of ``modules.processing`` that it does not define itself (it owns its A1111 surface; a name defined
there wins over the one here: ``fix_seed``, ``create_infotext``, ``Processed`` ... are its own)."""
from __future__ import annotations

from modules.rng import fixed_seed as get_fixed_seed  # noqa: F401 - A1111 name


def create_binary_mask(image, round: bool = True):  # noqa: A002 - A1111's argument name
    """A1111's ``processing.create_binary_mask``: a mask image as mode "L". An RGBA image that is not fully opaque is
    masked by its alpha channel (cut at half, to 0/255, when ``round``); any other image by its grey levels."""
    if image.mode == "RGBA":
        alpha = image.getchannel("A")
        low, high = alpha.getextrema()
        if (low, high) != (255, 255):
            return alpha.point(lambda v: 255 if v > 128 else 0) if round else alpha
    return image.convert("L")
