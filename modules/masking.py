"""Inpainting masks: blur, the "only masked" crop region, latent-size masks and the "fill" initialisation.

Masks are greyscale PIL images where white (255) means "regenerate".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps


def blur(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """Gaussian blur with separate horizontal and vertical radii (A1111's mask_blur_x / mask_blur_y)."""
    if blur_x <= 0 and blur_y <= 0:
        return mask
    arr = np.asarray(mask, dtype=np.float32)
    t = torch.from_numpy(arr)[None, None]
    for axis, radius in ((3, blur_x), (2, blur_y)):
        if radius > 0:
            t = _gaussian_1d(t, radius, axis)
    return Image.fromarray(t[0, 0].clamp(0, 255).round().to(torch.uint8).numpy())


def _gaussian_1d(t: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    size = int(sigma * 2.5) * 2 + 1
    x = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    shape = [1, 1, 1, 1]
    shape[axis] = size
    pad = [0, 0, 0, 0]
    if axis == 3:
        pad[0] = pad[1] = size // 2
    else:
        pad[2] = pad[3] = size // 2
    t = torch.nn.functional.pad(t, pad, mode="replicate")
    return torch.nn.functional.conv2d(t, kernel.view(shape))


def latent_mask(mask: Image.Image, latent_hw: tuple[int, int]) -> torch.Tensor:
    """The mask at latent resolution as a [1,1,h,w] float tensor, 1 = regenerate."""
    h, w = latent_hw
    small = mask.convert("L").resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None, None]


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area takes the colours of its surroundings, blurred ever wider."""
    keep = Image.eval(mask.convert("L"), lambda v: 255 - v)
    out = Image.new("RGB", image.size, _mean_colour(image, keep))
    for radius in (256, 64, 16, 4, 1, 0):
        blurred = image.filter(ImageFilter.GaussianBlur(radius)) if radius else image
        out = Image.composite(blurred, out, keep)
    return out


def _mean_colour(image: Image.Image, keep: Image.Image) -> tuple[int, int, int]:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    w = np.asarray(keep, dtype=np.float32)[..., None] / 255.0
    if w.sum() < 1:
        return (127, 127, 127)
    return tuple(int(v) for v in (arr * w).sum((0, 1)) / w.sum())


@dataclass(frozen=True)
class Region:
    """The part of the picture that "Inpaint area: Only masked" works on (left, top, right, bottom)."""
    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)

    def crop_resize(self, image: Image.Image, width: int, height: int) -> Image.Image:
        return image.crop(self.box).resize((width, height), Image.Resampling.LANCZOS)

    def place(self, result: Image.Image, size: tuple[int, int]) -> Image.Image:
        """``result`` scaled into this region of a transparent picture of ``size``."""
        canvas = Image.new("RGBA", size)
        canvas.paste(result.convert("RGBA").resize((self.right - self.left, self.bottom - self.top),
                                                   Image.Resampling.LANCZOS), (self.left, self.top))
        return canvas

    def paste_back(self, result: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
        """Scale ``result`` back into the region of ``original``, keeping pixels outside the mask."""
        size = (self.right - self.left, self.bottom - self.top)
        canvas = original.copy()
        canvas.paste(result.resize(size, Image.Resampling.LANCZOS), (self.left, self.top))
        return Image.composite(canvas, original, mask.convert("L"))


def overlays(pictures: list[Image.Image], mask: Image.Image) -> list[Image.Image]:
    """A1111's ``p.overlay_images``: each original as RGBA, transparent where the mask regenerates it."""
    alpha = ImageOps.invert(mask.convert("L"))
    result = []
    for picture in pictures:
        overlay = picture.convert("RGBA")
        overlay.putalpha(alpha if alpha.size == overlay.size else alpha.resize(overlay.size))
        result.append(overlay)
    return result


def put_overlay(image: Image.Image, overlay: Image.Image, mode: str | None = None) -> Image.Image:
    """``overlay`` (RGBA) laid over ``image`` (resized to it when their sizes differ), in ``mode`` (default:
    ``image``'s)."""
    base = image.convert("RGBA")
    if base.size != overlay.size:
        base = base.resize(overlay.size, Image.Resampling.LANCZOS)
    return Image.alpha_composite(base, overlay).convert(mode or image.mode)


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> Region:
    """Bounding box of the mask plus ``padding``, grown to the aspect ratio of the output and clipped to the image."""
    arr = np.asarray(mask.convert("L"))
    ys, xs = np.nonzero(arr > 0)
    img_w, img_h = mask.size
    if len(xs) == 0:
        return Region(0, 0, img_w, img_h)
    left, right = max(int(xs.min()) - padding, 0), min(int(xs.max()) + 1 + padding, img_w)
    top, bottom = max(int(ys.min()) - padding, 0), min(int(ys.max()) + 1 + padding, img_h)
    # grow the short side so the crop has the output's aspect ratio
    want = width / height
    cur_w, cur_h = right - left, bottom - top
    if cur_w / cur_h < want:
        new_w = min(int(round(cur_h * want)), img_w)
        left, right = _grow(left, right, new_w, img_w)
    else:
        new_h = min(int(round(cur_w / want)), img_h)
        top, bottom = _grow(top, bottom, new_h, img_h)
    return Region(left, top, right, bottom)


def _grow(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    extra = size - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), min(hi, limit)
