"""Reads a world image back: object colour, background colour, shape, position, size and style.

Deterministic and model-free, so it can score what a model drew against what its prompt asked for:

1. the background is the palette colour most of the border pixels are nearest to;
2. pixels more than `FOREGROUND_DISTANCE` away from it are foreground; the largest foreground blob is the object,
   its holes filled;
3. its colour is the palette colour nearest the median of its solid core; the object mask is then redone at half
   contrast between background and object colour, which undoes anti-aliasing;
4. shape from its silhouette inside the bounding box: a triangle (apex up) is much narrower in its top third than
   in its bottom third; a square fills its box's corners, a circle does not. Both cues survive blur, unlike the
   exact fill ratio. Position is the nearest anchor to the bbox centre, size the bbox's longer side, style from the
   holes inside the object, or "narrow" when the bbox is much taller than wide.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from modules.world import COLORS, HALF_EXTENT, IMAGE_SIZE, POSITION_CENTERS

PALETTE_NAMES = list(COLORS)
PALETTE = np.array([COLORS[name] for name in PALETTE_NAMES], dtype=np.float32)
FOREGROUND_DISTANCE = 48.0  # RGB distance from the background colour above which a pixel is foreground
MIN_OBJECT_PIXELS = 12
TRIANGLE_MAX_TAPER = 0.55  # top-third / bottom-third mean width: triangle ≈ 0.2, circle and square ≈ 1
# Filled share of the four corner cells (a fifth of the side each): square 1, circle ≈ 0.1 as drawn. Through the
# default model's VAE corners round off (a large narrow square keeps 0.39-0.89, a small circle reaches 0.42); 0.4
# reads the most round trips right: 99-100 % of solid and large narrow squares vs circles (0.6: 91.5 % of narrow).
SQUARE_MIN_CORNERS = 0.4
SOLID_MIN_FILL = 0.9  # share of the filled object that has the object's colour, for a solid shape
NARROW_MAX_ASPECT = 0.75  # bbox width / height: a narrow shape 0.5, the others 1
LARGE_MIN_SIDE = HALF_EXTENT["small"] + HALF_EXTENT["large"]  # 20 px: small shapes are 14, large 26


@dataclass(frozen=True)
class Analysis:
    """What the analyser read; None where there is no object to read it from."""

    color: str | None
    background: str
    shape: str | None
    position: str | None
    size: str | None
    style: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def nearest_color(rgb: np.ndarray) -> str:
    return PALETTE_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(-1)))]


def _pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _background(pixels: np.ndarray) -> tuple[str, np.ndarray]:
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    labels = np.argmin(((border[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1)
    winner = int(np.bincount(labels, minlength=len(PALETTE)).argmax())
    return PALETTE_NAMES[winner], np.median(border[labels == winner], axis=0)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _shape(filled: np.ndarray) -> tuple[str, tuple[float, float], float, float]:
    """Shape name, bbox centre (x, y), bbox's longer side and its width / height."""
    ys, xs = np.nonzero(filled)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = filled[y0:y1, x0:x1].astype(np.float32)
    third = max(1, box.shape[0] // 3)
    k = max(1, round(min(box.shape) / 5))
    if box[:third].sum(1).mean() < TRIANGLE_MAX_TAPER * box[-third:].sum(1).mean():
        shape = "triangle"
    else:
        corners = (box[:k, :k].mean() + box[:k, -k:].mean() + box[-k:, :k].mean() + box[-k:, -k:].mean()) / 4
        shape = "square" if corners >= SQUARE_MIN_CORNERS else "circle"
    return shape, ((x0 + x1) / 2, (y0 + y1) / 2), float(max(y1 - y0, x1 - x0)), (x1 - x0) / (y1 - y0)


def _style(colored: np.ndarray, filled: np.ndarray) -> str:
    if colored.sum() >= SOLID_MIN_FILL * filled.sum():
        return "solid"
    if ndimage.label(colored)[1] >= 2:
        return "bullseye"
    holes = ndimage.label(filled & ~colored)[1]
    return "striped" if holes >= 2 else "outlined"


def analyse(image: Image.Image | np.ndarray) -> Analysis:
    """Read a world image (any size; it is box-filtered to 64×64)."""
    return _read(_pixels(image))[0]


def object_mask(image: Image.Image | np.ndarray) -> np.ndarray:
    """The object's pixels as 64×64 booleans (its holes filled); all False when there is no object."""
    pixels = _pixels(image)
    mask = _read(pixels)[1]
    return mask if mask is not None else np.zeros(pixels.shape[:2], dtype=bool)


def _read(pixels: np.ndarray) -> tuple[Analysis, np.ndarray | None]:
    background, bg_rgb = _background(pixels)
    rough = _largest_blob(np.linalg.norm(pixels - bg_rgb, axis=-1) > FOREGROUND_DISTANCE)
    if rough.sum() < MIN_OBJECT_PIXELS:
        return Analysis(None, background, None, None, None, None), None
    core = ndimage.binary_erosion(rough)
    obj_rgb = np.median(pixels[core if core.sum() >= MIN_OBJECT_PIXELS else rough], axis=0)
    color = nearest_color(obj_rgb)

    # Half-contrast mask: a pixel is the object's colour when it lies nearer obj_rgb than bg_rgb.
    axis = obj_rgb - bg_rgb
    colored = ((pixels - bg_rgb) @ axis) / max(float(axis @ axis), 1e-6) > 0.5
    colored &= ndimage.binary_dilation(ndimage.binary_fill_holes(rough), iterations=2)
    filled = ndimage.binary_fill_holes(_largest_blob(colored))
    colored &= filled
    if filled.sum() < MIN_OBJECT_PIXELS:
        return Analysis(color, background, None, None, None, None), None

    shape, centre, side, aspect = _shape(filled)
    position = min(POSITION_CENTERS, key=lambda p: (POSITION_CENTERS[p][0] - centre[0]) ** 2 + (POSITION_CENTERS[p][1] - centre[1]) ** 2)
    return Analysis(color, background, shape, position, "large" if side >= LARGE_MIN_SIDE else "small",
                    "narrow" if aspect < NARROW_MAX_ASPECT else _style(colored, filled)), filled
