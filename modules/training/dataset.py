"""Training data: a folder of images, their captions, prompt templates, and the images' latents.

- Images are the ``.png/.jpg/.jpeg/.webp/.bmp`` files directly in the dataset folder (sub-folders are not read).
  Every image is converted to RGB and resized to the training width × height (bicubic, aspect ratio not kept), as
  A1111 does, so folders of mixed sizes train fine.
- Captions: a same-named ``.txt`` next to the image (``cat.png`` → ``cat.txt``), else the ``text`` of the image's
  line in a ``metadata.jsonl`` (``{"file_name": "cat.png", "text": "..."}`` per line). Textual inversion falls back
  to the file name (``00012-a_red_circle.png`` → ``a red circle``) for ``[filewords]``; LoRA needs real captions.
- Prompt templates (``textual_inversion_templates/*.txt``): one prompt per line with ``[name]`` (the embedding's
  trigger word) and ``[filewords]`` (the image's caption); each use picks a random line.
- Latents are encoded once per image. ``latent_sampling_method`` (A1111): ``once`` draws one sample of the VAE's
  latent distribution per image and keeps it, ``deterministic`` keeps the distribution's mean, ``random`` draws a
  new sample every time the image is used.
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from modules.paths import REPO_ROOT

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
METADATA_FILE = "metadata.jsonl"
TEMPLATES_DIR = REPO_ROOT / "textual_inversion_templates"
LatentSampling = Literal["once", "deterministic", "random"]
LATENT_SAMPLING_METHODS: tuple[LatentSampling, ...] = ("once", "deterministic", "random")
ENCODE_BATCH = 8  # images per VAE call while encoding the dataset

_INDEX_PREFIX = re.compile(r"^\d+[-_ ]+")  # "00012-" in front of names saved by the web UI


# --------------------------------------------------------------------------------------------------------------------
# Images and captions


def list_images(data_root: str | Path, field: str = "data_root") -> list[Path]:
    """The image files in ``data_root``, sorted by name; ``ValueError`` naming ``field`` when there are none."""
    folder = Path(data_root) if str(data_root).strip() else None
    if folder is None:
        raise ValueError(f"{field}: no dataset folder given")
    if not folder.is_dir():
        raise ValueError(f"{field}: dataset folder {str(folder)!r} does not exist or is not a folder")
    try:
        entries = sorted(folder.iterdir(), key=lambda path: path.name)
    except OSError as error:
        raise ValueError(f"{field}: cannot read dataset folder {str(folder)!r}: {error}") from None
    images = [path for path in entries if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    if not images:
        raise ValueError(f"{field}: dataset folder {str(folder)!r} holds no images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return images


def _read_metadata(folder: Path, field: str) -> dict[str, str]:
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    captions: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{field}: cannot read {path}: {error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry: Any = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{field}: {path.name} line {number} is not JSON: {error}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) \
                or not isinstance(entry.get("text"), str):
            raise ValueError(f"{field}: {path.name} line {number} needs string fields 'file_name' and 'text'")
        captions[Path(entry["file_name"]).as_posix()] = entry["text"].strip()
    return captions


def read_captions(images: Sequence[Path], field: str = "data_root") -> dict[Path, str]:
    """Each image's caption from its ``.txt`` file or the folder's ``metadata.jsonl``; images without one are absent."""
    captions: dict[Path, str] = {}
    metadata: dict[Path, dict[str, str]] = {}
    for image in images:
        text_file = image.with_suffix(".txt")
        if text_file.is_file():
            try:
                captions[image] = text_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"{field}: cannot read caption {text_file}: {error}") from None
            continue
        if image.parent not in metadata:
            metadata[image.parent] = _read_metadata(image.parent, field)
        if image.name in metadata[image.parent]:
            captions[image] = metadata[image.parent][image.name]
    return captions


def words_from_file_name(path: Path) -> str:
    """A1111-style ``[filewords]`` for an image without a caption: its name without index prefix, ``_`` as spaces."""
    return _INDEX_PREFIX.sub("", path.stem).replace("_", " ").strip()


def load_images(paths: Iterable[Path], width: int, height: int, field: str = "data_root") -> list[Image.Image]:
    """The images as RGB, resized to ``width`` × ``height`` where they differ (bicubic)."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{field}: cannot read image {path.name}: {error}") from None
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        images.append(image)
    return images


# --------------------------------------------------------------------------------------------------------------------
# Prompt templates


def template_dirs(data_dir: Path | None) -> list[Path]:
    """Where templates are looked up: the data dir's ``textual_inversion_templates`` first, then the shipped ones."""
    dirs = [data_dir / TEMPLATES_DIR.name] if data_dir is not None else []
    return [*dirs, TEMPLATES_DIR] if TEMPLATES_DIR not in dirs else dirs


def list_templates(dirs: Sequence[Path]) -> dict[str, Path]:
    """Template file name -> path (the UI's dropdown); a name in an earlier folder hides the same name later."""
    found: dict[str, Path] = {}
    for folder in dirs:
        if folder.is_dir():
            for path in sorted(folder.glob("*.txt")):
                found.setdefault(path.name, path)
    return found


@dataclass(frozen=True)
class PromptTemplate:
    """The prompt lines of a template file."""

    lines: tuple[str, ...]

    @classmethod
    def load(cls, name: str, dirs: Sequence[Path], field: str = "template_filename") -> PromptTemplate:
        """The template called ``name`` (a file name such as ``style_filewords.txt``) in ``dirs``."""
        templates = list_templates(dirs)
        path = templates.get(name)
        if path is None:
            raise ValueError(f"{field}: no prompt template {name!r}; available: {', '.join(templates) or 'none'}")
        try:
            lines = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{field}: cannot read {path}: {error}") from None
        if not lines:
            raise ValueError(f"{field}: prompt template {name!r} has no lines")
        return cls(lines)

    def render(self, rng: random.Random, name: str, filewords: str, *, shuffle_tags: bool = False,
               tag_drop_out: float = 0.0) -> str:
        """A random line with ``[name]`` and ``[filewords]`` filled in. The file words are split on commas into
        tags, shuffled when ``shuffle_tags``, and each dropped with probability ``tag_drop_out``."""
        line = rng.choice(self.lines)
        tags = [tag.strip() for tag in filewords.split(",") if tag.strip()]
        if shuffle_tags:
            rng.shuffle(tags)
        if tag_drop_out > 0:
            tags = [tag for tag in tags if rng.random() >= tag_drop_out]
        return line.replace("[name]", name).replace("[filewords]", ", ".join(tags))


# --------------------------------------------------------------------------------------------------------------------
# Latents and batches


class LatentCache:
    """The dataset's images encoded by the model's VAE (scaled as the UNet sees latents)."""

    def __init__(self, model: Any, images: Sequence[Image.Image], method: LatentSampling,
                 generator: torch.Generator) -> None:
        if method not in LATENT_SAMPLING_METHODS:
            raise ValueError(f"latent_sampling_method: {method!r} is not one of {', '.join(LATENT_SAMPLING_METHODS)}")
        vae = model.vae
        scale = vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(images), ENCODE_BATCH):
                pixels = np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1.0
                                   for image in images[start:start + ENCODE_BATCH]])
                x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(model.device, vae.dtype)
                distribution = vae.encode(x).latent_dist
                means.append((distribution.mean - shift) * scale)
                stds.append(distribution.std * scale)
        self.method = method
        self.mean = torch.cat(means)
        self.std = torch.cat(stds) if method == "random" else None
        if method == "once":
            self.mean = self.mean + torch.cat(stds) * self._noise(self.mean.shape, generator)

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(self.mean)

    def __len__(self) -> int:
        return self.mean.shape[0]

    def batch(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """``[B, C, h, w]`` latents of the images at ``indices``."""
        mean = self.mean[list(indices)]
        if self.std is None:
            return mean
        return mean + self.std[list(indices)] * self._noise(mean.shape, generator)


class BatchOrder:
    """Endless batches of dataset indices: every pass over the data in a new random order, batches running on across
    the end of a pass, so any batch size works with any dataset size."""

    def __init__(self, size: int, batch_size: int, rng: random.Random) -> None:
        self.size, self.batch_size, self.rng = size, batch_size, rng
        self._pending: list[int] = []

    def next(self) -> list[int]:
        while len(self._pending) < self.batch_size:
            order = list(range(self.size))
            self.rng.shuffle(order)
            self._pending += order
        batch, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
        return batch
