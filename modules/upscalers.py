"""Upscalers: A1111's list (``shared.sd_upscalers``) of None, Lanczos, Nearest and the model files the user dropped in
``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR`` and ``models/DAT`` (or ``--esrgan-models-path`` ...).

Each entry is an ``UpscalerData`` with A1111's attributes (``name``, ``data_path``, ``scale``, ``scaler`` whose
``upscale(img, scale, data_path)`` does the work), so hires fix, the Extras tab, SD upscale and extensions all pick
from the same list by name.

Model files are read here and built by **spandrel** (MIT): ``.safetensors`` directly, ``.pth`` with
``torch.load(weights_only=True)``, so a pickle that would run code is refused, never executed. spandrel's package
``__init__`` builds its main registry, which imports torchvision (LaMa, RestoreFormer) and there is no CPU
torchvision wheel for this torch; so unless the real package imports, spandrel's modules are loaded under a bare
package object (``spandrel_package``) and our own ``ArchRegistry`` holds the upscaling architectures that import without
torchvision. Large images run in overlapping tiles (settings ``ESRGAN_tile`` / ``ESRGAN_tile_overlap``) blended with
linear ramps, so memory is bounded by the tile, not the picture.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import pickle
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".safetensors", ".pth")
# Folder under models/ -> the command-line flag that replaces it (A1111's names).
MODEL_FOLDERS = {"ESRGAN": "esrgan_models_path", "RealESRGAN": "realesrgan_models_path",
                 "SwinIR": "swinir_models_path", "DAT": "dat_models_path"}
# spandrel's main-registry architectures that upscale pictures, in its detection order. LaMa and RestoreFormer
# (torchvision) and the face restorers are left out; one that fails to import is skipped with a warning.
ARCHITECTURES = ("Compact", "SwiftSRGAN", "HAT", "GRL", "Swin2SR", "SwinIR", "OmniSR", "SCUNet", "RGT", "DAT",
                 "CRAFT", "DITN", "SPAN", "RealCUGAN", "SAFMN", "DCTLSA", "ATD", "DRCT", "ESRGAN", "PLKSR", "SeemoRe",
                 "MoSR", "MoESR", "RCAN", "FDAT")
MAX_SCALE = 8


class UpscalerError(ValueError):
    """An upscaler that cannot be used (unknown name, unreadable or refused file); the message says which and why."""


# ---------------------------------------------------------------------------------------------------------------------
# spandrel without torchvision
# ---------------------------------------------------------------------------------------------------------------------
_spandrel_lock = threading.Lock()
_registry: Any = None


def spandrel_package() -> ModuleType:
    """The ``spandrel`` package: the real one when it imports, else a bare package object (its ``__init__`` not run)
    under which spandrel's own submodules import normally."""
    module = sys.modules.get("spandrel")
    if module is not None:
        return module
    if importlib.util.find_spec("torchvision") is not None:
        try:
            return importlib.import_module("spandrel")
        except Exception as e:  # noqa: BLE001 - a torchvision that cannot load (CUDA build on a CPU torch)
            log.info("spandrel's main registry does not import (%s); using its upscaling architectures only", e)
            for name in [n for n in sys.modules if n == "spandrel" or n.startswith("spandrel.")]:
                del sys.modules[name]
    spec = importlib.util.find_spec("spandrel")
    if spec is None:
        raise UpscalerError("upscaler models need the 'spandrel' package (pip install --no-deps spandrel einops)")
    module = importlib.util.module_from_spec(spec)
    sys.modules["spandrel"] = module
    helpers = importlib.import_module("spandrel.__helpers.registry")
    descriptors = importlib.import_module("spandrel.__helpers.model_descriptor")
    canonical = importlib.import_module("spandrel.__helpers.canonicalize")
    for name in ("ArchRegistry", "ArchSupport", "UnsupportedModelError", "DuplicateArchitectureError"):
        setattr(module, name, getattr(helpers, name))
    for name in ("ImageModelDescriptor", "MaskedImageModelDescriptor", "ModelDescriptor", "Architecture",
                 "SizeRequirements", "ModelTiling"):
        setattr(module, name, getattr(descriptors, name))
    module.canonicalize_state_dict = canonical.canonicalize_state_dict
    return module


def registry() -> Any:
    """An ``ArchRegistry`` of the upscaling architectures (built once)."""
    global _registry
    with _spandrel_lock:
        if _registry is None:
            spandrel = spandrel_package()
            reg = spandrel.ArchRegistry()
            for name in ARCHITECTURES:
                try:
                    arch_module = importlib.import_module(f"spandrel.architectures.{name}")
                    reg.add(spandrel.ArchSupport.from_architecture(getattr(arch_module, f"{name}Arch")()))
                except Exception as e:  # noqa: BLE001 - that architecture is just not offered
                    log.warning("spandrel architecture %s is unavailable: %s", name, e)
            _registry = reg
        return _registry


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model file: ``.safetensors``, or ``.pth`` through the weights-only unpickler."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if suffix == ".pth":
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise UpscalerError(f"{path.name}: upscaler models must be .safetensors or .pth files")
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        detail = f"it calls {found.group(1)}" if found else "unsupported pickle content"
        raise UpscalerError(f"{path.name}: refused to load: weights-only reading found something other than plain "
                            f"tensors ({detail}); such a file could run code and is never executed; use a "
                            ".safetensors file") from None
    except UpscalerError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader error means the same to the user
        raise UpscalerError(f"{path.name}: not a readable model file ({type(e).__name__}: {e})") from None
    for key in ("params_ema", "params", "state_dict", "model"):  # common wrappers of training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 4:
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UpscalerError(f"{path.name}: not a model file (no table of tensors inside)")
    return state


def load_model(path: Path, device: Any = "cpu") -> Any:
    """A spandrel ``ImageModelDescriptor`` (in eval mode, on ``device``) for an upscaler file."""
    state = read_state_dict(path)
    spandrel = spandrel_package()
    try:
        model = registry().load(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f"{path.name}: not an upscaler model of a known architecture "
                            f"(supported: {', '.join(ARCHITECTURES)})") from None
    except Exception as e:  # noqa: BLE001 - a detected architecture whose tensors do not fit
        raise UpscalerError(f"{path.name}: the model could not be built ({type(e).__name__}: {e})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose not in ("SR", "Restoration"):
        raise UpscalerError(f"{path.name}: a {model.architecture.name} model is not an upscaler")
    return model.eval().to(torch.device(device))


# ---------------------------------------------------------------------------------------------------------------------
# Running a model in tiles
# ---------------------------------------------------------------------------------------------------------------------
def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _ramp(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Blend weights along one side of a tile: rising over ``fade_in`` pixels, falling over ``fade_out``."""
    w = torch.ones(length)
    if fade_in:
        w[:fade_in] = torch.linspace(1, fade_in, fade_in) / (fade_in + 1)
    if fade_out:
        w[length - fade_out:] = torch.linspace(fade_out, 1, fade_out) / (fade_out + 1)
    return w


@torch.inference_mode()
def run_tiled(model: Any, image: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """``model`` (scale ``s``) applied to ``image`` [1, C, H, W] in ``tile``-pixel tiles that overlap by ``overlap``
    pixels and are blended linearly where they overlap; ``tile`` 0 runs the whole image at once."""
    _, _, h, w = image.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return model(image)
    overlap = min(overlap, tile // 2)
    s = model.scale
    out = torch.zeros((1, model.output_channels, h * s, w * s), dtype=torch.float32)
    weight = torch.zeros((1, 1, h * s, w * s), dtype=torch.float32)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for y in ys:
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
            result = model(image[:, :, y:y + th, x:x + tw]).float().cpu()
            # fade only on sides that another tile overlaps
            wy = _ramp(th * s, overlap * s if y > 0 else 0, overlap * s if y + th < h else 0)
            wx = _ramp(tw * s, overlap * s if x > 0 else 0, overlap * s if x + tw < w else 0)
            mask = wy[:, None] * wx[None, :]
            out[:, :, y * s:(y + th) * s, x * s:(x + tw) * s] += result * mask
            weight[:, :, y * s:(y + th) * s, x * s:(x + tw) * s] += mask
    return out / weight


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    array = tensor.squeeze(0).clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()
    return Image.fromarray((array * 255.0).round().astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------------------
# A1111's Upscaler / UpscalerData
# ---------------------------------------------------------------------------------------------------------------------
def target_size(image: Image.Image, scale: float) -> tuple[int, int]:
    """The size ``upscale(image, scale)`` gives: each side times ``scale``, rounded down to a multiple of 8 as A1111."""
    if not 0 < scale <= MAX_SCALE:
        raise UpscalerError(f"scale must be above 0 and at most {MAX_SCALE} (got {scale})")
    w, h = int(image.width * scale) // 8 * 8, int(image.height * scale) // 8 * 8
    return max(w, 8), max(h, 8)


class Upscaler:
    """One kind of upscaler (A1111's ``Upscaler``): ``upscale(img, scale, data_path)`` brings ``img`` to its size
    times ``scale`` by running ``do_upscale`` (the upscaler's own factor) until the size is reached, then Lanczos to
    the exact size."""

    name = "None"
    model_name: str | None = None
    scale: float = 1

    def do_upscale(self, img: Image.Image, data_path: str | None) -> Image.Image:
        return img

    def upscale(self, img: Image.Image, scale: float, data_path: str | None = None) -> Image.Image:
        width, height = target_size(img, scale)
        for _ in range(3):
            if img.width >= width and img.height >= height:
                break
            before = img.size
            img = self.do_upscale(img, data_path)
            if img.size == before:
                break
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.LANCZOS)
        return img


class UpscalerNone(Upscaler):
    """No upscaler of its own: ``upscale`` only brings the picture to size with Lanczos (as A1111's "None")."""


class UpscalerResample(Upscaler):
    """Pillow's Lanczos or Nearest straight to the target size."""

    def __init__(self, name: str, resample: Image.Resampling) -> None:
        self.name, self.resample = name, resample

    def upscale(self, img: Image.Image, scale: float, data_path: str | None = None) -> Image.Image:
        return img.resize(target_size(img, scale), self.resample)


class UpscalerModels(Upscaler):
    """The model files of one folder (``ESRGAN``, ``RealESRGAN``, ``SwinIR``, ``DAT``), run by spandrel in tiles."""

    def __init__(self, kind: str, folder: Path, cache: ModelCache, opts: Any) -> None:
        self.name = self.model_name = kind
        self.folder, self.cache, self.opts = folder, cache, opts

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.rglob("*") if p.suffix.lower() in MODEL_EXTENSIONS and p.is_file()]
        # a .safetensors beside a .pth of the same name is preferred
        stems = {p.with_suffix("") for p in found if p.suffix.lower() == ".safetensors"}
        return sorted(p for p in found if p.suffix.lower() == ".safetensors" or p.with_suffix("") not in stems)

    def do_upscale(self, img: Image.Image, data_path: str | None) -> Image.Image:
        if not data_path:
            raise UpscalerError(f"{self.name}: no model file given")
        model = self.cache.get(Path(data_path))
        tile = int(getattr(self.opts, "ESRGAN_tile", 192))
        overlap = int(getattr(self.opts, "ESRGAN_tile_overlap", 8))
        tensor = pil_to_tensor(img).to(self.cache.device)
        return tensor_to_pil(run_tiled(model, tensor, tile, overlap))


class ModelCache:
    """The most recently used upscaler model stays loaded (one at a time: they can be large)."""

    def __init__(self, device: Any = "cpu") -> None:
        self.device = torch.device(device)
        self._key: tuple[str, float] | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def get(self, path: Path) -> Any:
        try:
            key = (str(path.resolve()), path.stat().st_mtime)
        except OSError:
            raise UpscalerError(f"upscaler model {path} does not exist") from None
        with self._lock:
            if key != self._key:
                self._model, self._key = None, None
                self._model, self._key = load_model(path, self.device), key
            return self._model


@dataclass(eq=False)
class UpscalerData:
    """One choice in the list (A1111's ``UpscalerData``)."""
    name: str
    data_path: str | None
    scaler: Upscaler
    scale: float = 4
    model: Any = None
    model_path: str | None = field(default=None)
    model_url: str | None = None

    def __post_init__(self) -> None:
        self.model_path = self.model_path or self.data_path

    @property
    def model_name(self) -> str | None:
        return self.scaler.model_name

    @property
    def local_data_path(self) -> str | None:
        return self.data_path


def _scale_from_name(name: str) -> int:
    """A1111 guesses a model's factor from its file name ("4x-UltraSharp", "RealESRGAN_x2plus"); 4 otherwise."""
    match = re.search(r"(?<![0-9])([1-8])[xX]|[xX]([1-8])(?![0-9])", name)
    return int(match.group(1) or match.group(2)) if match else 4


class UpscalerRegistry:
    """The upscalers of a running app: fixed ones plus the model files found now in the model folders."""

    def __init__(self, folders: dict[str, Path], opts: Any = None, device: Any = "cpu") -> None:
        self.cache = ModelCache(device)
        self.opts = opts
        self.fixed = [UpscalerData("None", None, UpscalerNone(), scale=1),
                      UpscalerData("Lanczos", None, UpscalerResample("Lanczos", Image.Resampling.LANCZOS)),
                      UpscalerData("Nearest", None, UpscalerResample("Nearest", Image.Resampling.NEAREST))]
        self.model_scalers = [UpscalerModels(kind, Path(folder), self.cache, opts) for kind, folder in folders.items()]

    def list(self) -> list[UpscalerData]:
        """None, Lanczos, Nearest, then each model file (named by its file name without extension; a name already
        taken gets its folder in brackets)."""
        result = list(self.fixed)
        taken = {u.name for u in result}
        for scaler in self.model_scalers:
            for path in scaler.files():
                name = path.stem if path.stem not in taken else f"{path.stem} ({scaler.name})"
                taken.add(name)
                result.append(UpscalerData(name, str(path), scaler, scale=_scale_from_name(path.stem)))
        return result

    def names(self) -> list[str]:
        return [u.name for u in self.list()]

    def find(self, name: str, field_name: str = "upscaler") -> UpscalerData:
        """The upscaler called ``name`` (case-sensitive, as A1111); an error naming ``field_name`` and the valid
        names otherwise."""
        upscalers = self.list()
        for upscaler in upscalers:
            if upscaler.name == name:
                return upscaler
        raise UpscalerError(f"{field_name}: could not find upscaler named {name!r}; valid: "
                            f"{', '.join(u.name for u in upscalers)}")

    def upscale(self, image: Image.Image, scale: float, name: str, field_name: str = "upscaler") -> Image.Image:
        upscaler = self.find(name, field_name)
        return upscaler.scaler.upscale(image, scale, upscaler.data_path)


def default_folders(models_dir: Path, args: Any = None) -> dict[str, Path]:
    """``models/<kind>`` for each kind, or the folder its command-line flag names."""
    return {kind: Path(getattr(args, flag, None) or models_dir / kind).resolve()
            for kind, flag in MODEL_FOLDERS.items()}
