"""A procedural world of coloured shapes: the images and captions the default model is trained on.

Every image is 64×64 RGB: one shape (circle, square, triangle) in a named colour on a background of another named
colour, at a named position and size. Everything is deterministic: a `Scene` always renders to the same pixels, and
`sample_scene` / `caption` draw only from the `random.Random` they are given.

The base model is trained on ``style="solid"`` scenes only; the other styles exist so that LoRA / textual-inversion
work can teach the model something it has never seen: outlined, striped and bullseye are 2-pixel patterns, "narrow"
(the shape at half its width) is a change of geometry, the kind of look the small f=4 latent space keeps.
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn at 4× and box-filtered down, which anti-aliases their edges

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "pink": (245, 140, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("center", "left", "right", "top", "bottom")
SIZES = ("small", "large")
STYLES = ("solid", "outlined", "striped", "bullseye", "narrow")
BASE_STYLES = ("solid",)  # the only style in the base model's training set
ATTRIBUTES = ("color", "background", "shape", "position", "size", "style")

POSITION_CENTERS: dict[str, tuple[int, int]] = {
    "center": (32, 32), "left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48),
}
POSITION_PHRASES: dict[str, str] = {
    "center": "in the center", "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
}
HALF_EXTENT: dict[str, int] = {"small": 7, "large": 13}  # half the side of the shape's bounding box, in pixels
MAX_JITTER = 2  # sample_scene moves shapes by up to this many pixels from their anchor
NARROW_WIDTH = 0.5  # a narrow shape keeps its height and has this share of its width

# Caption templates; {style} is empty for solid shapes. Index 2 names every attribute. The last two name only the
# object or only the background: a model that has seen parts of scenes described alone can compose them again
# (``a red circle AND a blue background``, or the two halves of a prompt split by BREAK).
TEMPLATES = (
    "a {color} {style}{shape} on a {background} background",
    "a {size} {color} {style}{shape} {where}",
    "a {size} {color} {style}{shape} {where} on a {background} background",
    "a {color} {style}{shape} {where}, {background} background",
    "{size} {color} {style}{shape}, {background} background, {where}",
    "a {color} {style}{shape}",
    "a {background} background",
)
FULL_TEMPLATE = 2
PARTIAL_TEMPLATES = (5, 6)  # the object alone, the background alone


@dataclass(frozen=True)
class Scene:
    """One picture of the world. `offset` nudges the shape (pixels, x and y) away from its position's anchor."""

    shape: str
    color: str
    background: str
    position: str
    size: str
    style: str = "solid"
    offset: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        for name, value, allowed in (("shape", self.shape, SHAPES), ("color", self.color, COLORS),
                                     ("background", self.background, COLORS), ("position", self.position, POSITIONS),
                                     ("size", self.size, SIZES), ("style", self.style, STYLES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
        if self.color == self.background:
            raise ValueError(f"shape and background have the same colour {self.color!r}")
        if max(abs(self.offset[0]), abs(self.offset[1])) > MAX_JITTER:
            raise ValueError(f"offset {self.offset} is larger than {MAX_JITTER} pixels")

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}


def sample_scene(rng: random.Random, styles: tuple[str, ...] = BASE_STYLES, jitter: bool = True,
                 sizes: tuple[str, ...] = SIZES) -> Scene:
    """Draw a scene uniformly over shapes, colour pairs, positions and the given sizes and styles."""
    color = rng.choice(list(COLORS))
    background = rng.choice([c for c in COLORS if c != color])
    scene = dict(shape=rng.choice(SHAPES), color=color, background=background, position=rng.choice(POSITIONS),
                 size=rng.choice(sizes), style=rng.choice(styles))
    offset = (rng.randint(-MAX_JITTER, MAX_JITTER), rng.randint(-MAX_JITTER, MAX_JITTER)) if jitter else (0, 0)
    return Scene(**scene, offset=offset)


def save_dataset(folder: Path, items: Iterable[tuple[Scene, str | None]], size: int = IMAGE_SIZE) -> Path:
    """A training folder as the Train tab reads it: ``NNN.png`` and its caption in ``NNN.txt`` (none for None)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (scene, text) in enumerate(items):
        render(scene, size=size).save(folder / f"{i:03d}.png")
        if text is not None:
            (folder / f"{i:03d}.txt").write_text(text)
    return folder


def caption(scene: Scene, template_rng: random.Random | None = None, *, template: int | None = None) -> str:
    """English caption of `scene`: template `template`, else one drawn from `template_rng`, else the full one."""
    if template is None:
        template = template_rng.randrange(len(TEMPLATES)) if template_rng is not None else FULL_TEMPLATE
    style = "" if scene.style == "solid" else scene.style + " "
    text = TEMPLATES[template].format(color=scene.color, background=scene.background, shape=scene.shape, style=style,
                                      size=scene.size, where=POSITION_PHRASES[scene.position])
    return _AN.sub(r"\1an \2", text)


_INCENTRE = 1 - 2 / (1 + 5 ** 0.5)  # the triangle's incentre lies 0.382·half below its bbox centre
_INRADIUS = {"circle": 1.0, "square": 1.0, "triangle": 2 / (1 + 5 ** 0.5)}  # in units of half


def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, half: float, scale: float = 1.0) -> np.ndarray:
    """Which points lie in the shape filling [cx-half, cx+half]², shrunk by `scale` about its incentre.

    The triangle is isosceles, apex up, base along the bottom of the box.
    """
    oy = cy + half * _INCENTRE if shape == "triangle" else cy
    u, v = (x - cx) / scale, (y - oy) / scale + (oy - cy)  # back into the unshrunk shape's frame, centred on its box
    if shape == "circle":
        return u * u + v * v <= half * half
    if shape == "square":
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    return (v <= half) & (np.abs(u) <= (v + half) / 2)


def coverage(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """How much of each pixel has the shape's colour (float32 [size, size] in 0..1), from 4×4 samples per pixel."""
    k = SUPERSAMPLE
    grid = (np.arange(size * k, dtype=np.float32) + 0.5) * (IMAGE_SIZE / (size * k))  # sample points, world units
    x, y = grid[None, :], grid[:, None]
    px, py = POSITION_CENTERS[scene.position]
    cx, cy, half = px + scene.offset[0], py + scene.offset[1], float(HALF_EXTENT[scene.size])
    if scene.style == "narrow":
        x = cx + (x - cx) / NARROW_WIDTH
    mask = _inside(scene.shape, x, y, cx, cy, half)
    if scene.style not in ("solid", "narrow"):
        outline = 1.5 if scene.style == "striped" or scene.shape == "triangle" else 2.0
        hole = 1 - outline / (half * _INRADIUS[scene.shape])  # scale leaving an outline of even width
        inner = _inside(scene.shape, x, y, cx, cy, half, hole)
        mask = mask & ~inner
        if scene.style == "bullseye":
            mask |= _inside(scene.shape, x, y, cx, cy, half, hole / 2)
        elif scene.style == "striped":
            mask |= inner & (np.floor((y - cy) / 2) % 2 == 0)  # 2 px of colour, 2 px of background
    return mask.reshape(size, k, size, k).mean(axis=(1, 3), dtype=np.float32)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as a `size`×`size` RGB image (the world is laid out on 64×64 and scaled)."""
    c = coverage(scene, size)[..., None]
    pixels = np.asarray(COLORS[scene.background], np.float32) * (1 - c) + np.asarray(COLORS[scene.color], np.float32) * c
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")


_AN = re.compile(r"(^|\s)a ([aeiou])")
_WORD = re.compile(r"[a-z]+")
_POSITION_WORDS = {"center": "center", "centre": "center", "middle": "center", "left": "left", "right": "right",
                   "top": "top", "bottom": "bottom"}


def parse_prompt_attributes(text: str) -> dict[str, str]:
    """The world attributes a prompt names, e.g. {"color": "red", "shape": "circle", "background": "blue"}.

    A colour directly before "background" is the background; the first other colour is the shape's.
    """
    words = _WORD.findall(text.lower())
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        if word in COLORS:
            key = "background" if i + 1 < len(words) and words[i + 1] in ("background", "backdrop") else "color"
            found.setdefault(key, word)
        elif word in SHAPES:
            found.setdefault("shape", word)
        elif word in SIZES:
            found.setdefault("size", word)
        elif word in _POSITION_WORDS:
            found.setdefault("position", _POSITION_WORDS[word])
        elif word in STYLES:
            found.setdefault("style", word)
    return found
