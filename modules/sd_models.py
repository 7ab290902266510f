"""Checkpoints: discovery, hashes, family detection, offline loading, and the LRU ``ModelManager``.

Checkpoints live under ``models/Stable-diffusion`` (``paths.ckpt_dir``): ``.safetensors`` files, diffusers folders
(with ``model_index.json``), and legacy ``.ckpt``/``.pt`` pickles, which are only ever read with
``torch.load(weights_only=True)`` so that a file which would run code is refused, never executed.

Single files are loaded fully offline: the architecture comes from a config-only diffusers folder shipped in
``modules/configs`` (one per family), chosen from the file's keys (see ``detect_family``).

Prediction type (epsilon or v), first match wins:

1. safetensors metadata ``prediction_type`` or ``modelspec.prediction_type`` (``epsilon`` / ``v`` / ``v_prediction``);
2. a ``v_pred`` key in the state dict (the marker v-prediction SDXL finetunes carry);
3. an A1111-style ``<checkpoint stem>.yaml`` beside the file: ``parameterization: "v"`` means v, anything else epsilon;
4. the config folder named by the ``sd_config`` metadata: its scheduler's ``prediction_type``;
5. SD2 (where 768-v and 512-base share every key): ``probe_prediction_type`` on the loaded UNet;
6. epsilon.

Zero terminal SNR (``SDModel.zero_terminal_snr``, ``modules.noise_schedule``): a ``ztsnr`` key in a single file's
state dict, or ``rescale_betas_zero_snr`` in the scheduler config of a diffusers folder (or of the config folder a
file's ``sd_config`` names). A single file's marker is written into its pipeline's scheduler config, with trailing
spacing, so the loaded model's ``scheduler_config`` says it either way.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import logging
import os
import re
import threading
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from modules import live_previews, noise_schedule, sd_vae
from modules.ldm_convert import Family
from modules.options import Options
from modules.paths import CONFIGS_DIR, Paths
from modules.sd_vae import VaeInfo

if TYPE_CHECKING:  # diffusers and transformers are imported when a model is loaded, not at start-up
    import transformers
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

log = logging.getLogger(__name__)

PredictionType = Literal["epsilon", "v_prediction"]
StateDict = dict[str, torch.Tensor]

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt")
PICKLE_EXTENSIONS = (".ckpt", ".pt")
# The project's own model names this config folder in its ``sd_config`` metadata; select_default prefers it.
DEFAULT_MODEL_CONFIG = "default-tiny"
UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
# Key prefixes that identify each family, most specific first.
FAMILY_KEYS: tuple[tuple[str, Family], ...] = (
    ("conditioner.embedders.1.model.", "sdxl"),
    ("conditioner.embedders.0.model.", "sdxl-refiner"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.text_model.", "sd1"),
)
# Shipped config folder per family (modules/configs/<name>).
FAMILY_CONFIGS: dict[Family, str] = {"sd1": "sd15", "sd2": "sd21-base", "sdxl": "sdxl", "sdxl-refiner": "sdxl-refiner"}
SD2_V_CONFIG = "sd21"  # SD2 768-v: the same architecture as 512-base, a v-prediction scheduler and sample size 96
HASH_BLOCK = 1 << 20
BACKGROUND_HASH_BYTES = 64 << 20
"""A checkpoint at least this large (or a diffusers folder) without a ``.sha256`` sidecar is hashed on a background
thread after its load starts, as A1111 hashes lazily: a first load costs what reading the weights costs (a 2 GB file
took 6.0 s with the hash before the load against diffusers' 4.4 s). Its title and infotext get the hash once it is
known; until then the title is the bare name and the API's ``hash``/``sha256`` are null. Smaller files (the default
model: ~30 ms) and files with a sidecar (which must be verified before use) are hashed before the load."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names the file and the problem."""


class CheckpointNotFoundError(LookupError):
    """No checkpoint matches a title, name or hash; the message lists the available titles."""


# -- hashes ----------------------------------------------------------------------------------------------------------

def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_folder(path: Path) -> str:
    """A diffusers folder's hash: SHA-256 over ``relative path NUL file SHA-256 LF`` for every file, sorted."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_of_file(file)}\n".encode())
    return digest.hexdigest()


def legacy_hash_of_file(path: Path) -> str:
    """A1111's pre-2023 "model hash": 8 hex digits of SHA-256 over the 64 KiB at offset 1 MiB."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def _stat_key(path: Path) -> tuple[float, int]:
    """(mtime, size) of a file, or of the newest file and total size of a folder."""
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return max((s.st_mtime for s in stats), default=0.0), sum(s.st_size for s in stats)
    stat = path.stat()
    return stat.st_mtime, stat.st_size


class HashCache:
    """SHA-256 results in ``cache.json`` under ``"hashes"``, keyed by ``<category>/<absolute path>`` and valid while
    the file's mtime and size are unchanged. Other top-level keys of the file are kept. Results are also kept in
    memory, so a data dir that cannot be written only costs hashing again after a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._parsed: tuple[int, dict[str, Any]] = (-1, {})  # (mtime_ns of cache.json, its "hashes")
        self._computed: dict[str, dict[str, Any]] = {}

    def _entries(self) -> dict[str, Any]:
        """The file's entries, parsed again only when the file changed (other modules may write to it too)."""
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._parsed[0]:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                hashes = data.get("hashes") if isinstance(data, dict) else None
                self._parsed = (mtime, hashes if isinstance(hashes, dict) else {})
        except (OSError, ValueError):
            self._parsed = (-1, {})
        return self._parsed[1]

    def get(self, category: str, path: Path) -> str | None:
        key = f"{category}/{path}"
        with self._lock:
            entry = self._computed.get(key) or self._entries().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            mtime, size = _stat_key(path)
        except OSError:
            return None
        return entry.get("sha256") if (entry.get("mtime"), entry.get("size")) == (mtime, size) else None

    def sha256(self, category: str, path: Path) -> str:
        """The cached hash, or compute it (whole file; a folder: every file) and cache it."""
        if cached := self.get(category, path):
            return cached
        mtime, size = _stat_key(path)
        value = sha256_of_folder(path) if path.is_dir() else sha256_of_file(path)
        entry = {"mtime": mtime, "size": size, "sha256": value}
        with self._lock:
            self._computed[f"{category}/{path}"] = entry
            try:
                self._write(f"{category}/{path}", entry)
            except OSError as e:
                log.warning("could not save the hash of %s to %s: %s", path, self.path, e)
        return value

    def _write(self, key: str, entry: dict[str, Any]) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        if not isinstance(data.get("hashes"), dict):
            data["hashes"] = {}
        data["hashes"][key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cache-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)


# -- checkpoint info -------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class CheckpointInfo:
    """One checkpoint file or diffusers folder, with A1111's field names."""

    filename: str  # absolute path
    name: str  # path relative to the checkpoint folder, with its extension: "sub/model.safetensors"
    sha256: str | None = None  # filled by ModelManager.calculate_hash (on load) or from the hash cache
    _legacy_hash: str | None = field(default=None, repr=False)

    @property
    def model_name(self) -> str:
        """A1111's ``model_name``: the name without extension, path separators replaced by ``_``."""
        return os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]

    @property
    def name_for_extra(self) -> str:
        """Base name without extension (infotext ``Model:``)."""
        return os.path.splitext(os.path.basename(self.filename.rstrip("/")))[0]

    @property
    def is_diffusers_folder(self) -> bool:
        return os.path.isdir(self.filename)

    @property
    def shorthash(self) -> str | None:
        """First 10 hex digits of the SHA-256 (A1111's "Model hash"), once computed."""
        return self.sha256[:10] if self.sha256 else None

    @property
    def hash(self) -> str | None:
        return self.shorthash

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    @property
    def legacy_hash(self) -> str | None:
        """A1111's old 8-hex "model hash" (64 KiB read); None for diffusers folders and unreadable files."""
        if self._legacy_hash is None and not self.is_diffusers_folder:
            try:
                self._legacy_hash = legacy_hash_of_file(Path(self.filename))
            except OSError:
                return None
        return self._legacy_hash

    def metadata(self) -> dict[str, str]:
        """safetensors header metadata (empty for other formats or unreadable files)."""
        if not self.filename.endswith(".safetensors"):
            return {}
        try:
            with safe_open(self.filename, "pt") as f:
                return dict(f.metadata() or {})
        except (OSError, SafetensorError):
            return {}


def list_checkpoint_files(ckpt_dir: Path) -> list[tuple[Path, str]]:
    """(path, relative name) of every checkpoint file and diffusers folder, sorted by name. Files inside a diffusers
    folder belong to it; ``*.vae.*`` files are VAEs."""
    found: list[tuple[Path, str]] = []
    if not ckpt_dir.is_dir():
        return found
    for root, dirs, files in os.walk(ckpt_dir, followlinks=True):
        root_path = Path(root)
        if (root_path / "model_index.json").is_file() and root_path != ckpt_dir:
            found.append((root_path, root_path.relative_to(ckpt_dir).as_posix()))
            dirs.clear()
            continue
        dirs.sort()
        for file in files:
            path = root_path / file
            if path.suffix in CHECKPOINT_EXTENSIONS and ".vae." not in file:
                found.append((path, path.relative_to(ckpt_dir).as_posix()))
    return sorted(found, key=lambda item: item[1].lower())


def _find_checkpoint(checkpoints: list[CheckpointInfo], query: str) -> CheckpointInfo | None:
    """The first checkpoint matching ``query``, trying the A1111 forms from the most to the least specific."""
    lowered = query.lower()
    matchers: list[Callable[[CheckpointInfo], bool]] = [
        lambda c: query in (c.title, c.name, c.filename),
        lambda c: query in (c.model_name, os.path.splitext(c.name)[0], c.name_for_extra),
        lambda c: bool(c.sha256) and lowered in (c.shorthash, c.sha256),
        lambda c: bool(re.fullmatch(r"[0-9a-f]{8}", lowered)) and c.legacy_hash == lowered,
    ]
    for matches in matchers:
        for info in checkpoints:
            if matches(info):
                return info
    return None


# -- reading files ---------------------------------------------------------------------------------------------------

class _Inert:
    """Stands in for a class that old training checkpoints pickle next to the weights; keeps nothing, runs nothing."""

    def __setstate__(self, state: object) -> None:
        pass


# Classes harmless to "import" from a pickle: replaced by ``_Inert`` (the real ones are never imported).
PICKLE_STAND_INS = [(_Inert, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")]


def read_state_dict(path: Path) -> StateDict:
    """All tensors of a single-file checkpoint. Pickles go through ``torch.load(weights_only=True)``: a file that
    would import anything but tensors is refused, never executed. Raises ``CheckpointLoadError``."""
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: file not found (it was moved or deleted; refresh the list)")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as e:
            raise CheckpointLoadError(f"{path}: not a valid safetensors file (truncated or corrupt): {e}") from e
    if path.suffix not in PICKLE_EXTENSIONS:
        raise CheckpointLoadError(f"{path}: unsupported file type {path.suffix!r}")
    try:
        with torch.serialization.safe_globals(PICKLE_STAND_INS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or zipfile errors depending on the damage
        blocked = re.search(r"GLOBAL (\S+)", str(e))
        if blocked:
            raise CheckpointLoadError(
                f"{path}: refused to load: this pickle would import {blocked.group(1)} when opened, so it could run "
                "code. Only plain tensors are accepted from .ckpt/.pt files; use a .safetensors version of the "
                "model") from None
        raise CheckpointLoadError(f"{path}: not a readable checkpoint (truncated or corrupt): {e}") from e
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointLoadError(f"{path}: does not contain a state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


@dataclass(frozen=True)
class CheckpointHeader:
    """What detection needs: key names, the UNet's input channel count, safetensors metadata."""

    keys: frozenset[str]
    input_channels: int | None
    metadata: dict[str, str]

    @classmethod
    def of_safetensors(cls, path: Path) -> "CheckpointHeader":
        """Reads only the header."""
        try:
            with safe_open(str(path), "pt") as f:
                keys = frozenset(f.keys())
                channels = f.get_slice(UNET_INPUT_KEY).get_shape()[1] if UNET_INPUT_KEY in keys else None
                return cls(keys, channels, dict(f.metadata() or {}))
        except SafetensorError as e:
            raise CheckpointLoadError(f"{path}: not a valid safetensors file (truncated or corrupt): {e}") from e

    @classmethod
    def of_state_dict(cls, sd: StateDict) -> "CheckpointHeader":
        channels = sd[UNET_INPUT_KEY].shape[1] if UNET_INPUT_KEY in sd else None
        return cls(frozenset(sd), channels, {})


# -- detection -------------------------------------------------------------------------------------------------------

def detect_family(keys: Iterable[str]) -> Family | None:
    keys = list(keys)
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        return None
    for prefix, family in FAMILY_KEYS:
        if any(k.startswith(prefix) for k in keys):
            return family
    return None


def _normalize_prediction_type(value: str) -> PredictionType | None:
    value = value.strip().lower()
    if value in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if value in ("eps", "epsilon"):
        return "epsilon"
    return None


def declared_prediction_type(path: Path, header: CheckpointHeader) -> PredictionType | None:
    """Rules 1-3 of the module docstring: what the file (or the yaml beside it) says, if anything."""
    for key in ("prediction_type", "modelspec.prediction_type"):
        if key in header.metadata and (value := _normalize_prediction_type(header.metadata[key])):
            return value
    if "v_pred" in header.keys:
        return "v_prediction"
    yaml = path.with_suffix(".yaml")
    if yaml.is_file():
        text = yaml.read_text(encoding="utf-8", errors="replace")
        return "v_prediction" if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.M) else "epsilon"
    return None


@torch.no_grad()
def probe_prediction_type(unet: torch.nn.Module) -> PredictionType:
    """Tell an epsilon UNet from a v UNet by how it answers pure noise.

    At t=999 (ᾱ ≈ 0.005) the input x is essentially noise. An epsilon model predicts the noise, so its output is
    ≈ x (regression slope of output on input ≈ 1). A v model predicts v = √ᾱ·ε − √(1−ᾱ)·x̂₀ ≈ 0.07·x − x̂₀ with x̂₀
    near the data mean, so its slope is ≈ 0. The rule: slope > 0.5 means epsilon. Conditioning is all zeros.
    """
    config = unet.config
    param = next(unet.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, config.in_channels, 8, 8, generator=generator).to(param.device, param.dtype)
    context = torch.zeros(1, 77, config.cross_attention_dim, device=param.device, dtype=param.dtype)
    out = unet(x, 999, encoder_hidden_states=context).sample.float()
    slope = float((out * x.float()).sum() / x.float().pow(2).sum())
    log.info("prediction-type probe: slope %.3f", slope)
    return "epsilon" if slope > 0.5 else "v_prediction"


@dataclass(frozen=True)
class ModelSpec:
    """How to build a checkpoint: its family, the config folder with its architecture, and what is known of its
    prediction type (None: probe the UNet once it is loaded)."""

    family: Family
    config_dir: Path
    prediction_type: PredictionType | None
    input_channels: int | None
    zero_terminal_snr: bool = False   # the file's ``ztsnr`` marker key


def family_config_name(family: Family, prediction_type: PredictionType) -> str:
    return SD2_V_CONFIG if family == "sd2" and prediction_type == "v_prediction" else FAMILY_CONFIGS[family]


def _scheduler_prediction_type(config_dir: Path) -> PredictionType:
    config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    return _normalize_prediction_type(config.get("prediction_type", "epsilon")) or "epsilon"


# -- loaded model ----------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class SDModel:
    """A loaded checkpoint: the diffusers pipeline plus what the rest of the app needs to know about it."""

    pipe: DiffusionPipeline | None
    family: Family
    prediction_type: PredictionType
    sd_checkpoint_info: CheckpointInfo
    config_dir: Path
    device: torch.device
    vae_info: VaeInfo | None = None  # a separate VAE in use, None for the checkpoint's own
    base_vae: torch.nn.Module | None = field(default=None, repr=False)  # the checkpoint's own VAE while one is swapped in
    zero_terminal_snr: bool = False  # trained with zero terminal SNR (its scheduler config says so)

    def _pipe(self) -> DiffusionPipeline:
        if self.pipe is None:
            raise RuntimeError(f"model {self.sd_checkpoint_info.title} was unloaded")
        return self.pipe

    def _component(self, name: str) -> Any:
        return getattr(self._pipe(), name, None)

    @property
    def unet(self) -> UNet2DConditionModel:
        return self._component("unet")

    @property
    def vae(self) -> AutoencoderKL:
        return self._component("vae")

    @property
    def text_encoder(self) -> transformers.CLIPTextModel | None:
        return self._component("text_encoder")

    @property
    def tokenizer(self) -> transformers.CLIPTokenizer | None:
        return self._component("tokenizer")

    @property
    def text_encoder_2(self) -> transformers.CLIPTextModelWithProjection | None:
        return self._component("text_encoder_2")

    @property
    def tokenizer_2(self) -> transformers.CLIPTokenizer | None:
        return self._component("tokenizer_2")

    @property
    def is_sd1(self) -> bool:
        return self.family == "sd1"

    @property
    def is_sd2(self) -> bool:
        return self.family == "sd2"

    @property
    def is_sdxl(self) -> bool:
        """True for SDXL base and refiner, as in A1111."""
        return self.family in ("sdxl", "sdxl-refiner")

    @property
    def is_inpaint(self) -> bool:
        return self.unet.config.in_channels == 9

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """A copy of the model's own scheduler config (samplers are built from it). diffusers' loading note
        ``_use_default_values`` is left out: passed to ``from_config`` it would drop those values (gotcha 3)."""
        config = dict(self._pipe().scheduler.config)
        config.pop("_use_default_values", None)
        return config

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def sd_model_hash(self) -> str | None:
        return self.sd_checkpoint_info.shorthash

    @property
    def sd_vae_name(self) -> str | None:
        return self.vae_info.name if self.vae_info else None

    @property
    def sd_vae_hash(self) -> str | None:
        return self.vae_info.shorthash if self.vae_info else None

    def release(self) -> None:
        """Drop every reference to the weights; the manager then collects garbage and returns memory to the OS."""
        self.pipe = None
        self.base_vae = None


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _prepare(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """float32 on ``device``, eval mode, no gradients. (``.float()``, not ``.to(dtype)``, which diffusers warns about.)"""
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module.float()
    if any(p.device != device for p in module.parameters()):
        module.to(device)
    return module.eval().requires_grad_(False)


# -- manager ---------------------------------------------------------------------------------------------------------

class ModelManager:
    """Discovers checkpoints and VAEs and keeps at most ``opts.sd_checkpoints_limit`` models loaded (LRU).

    ``configs_dirs`` are searched in order for config folders (by name); tests put tiny ones first.
    Thread-safe: loads, unloads and VAE changes run one at a time; reads (``current``, lists, lookups) only take a
    short lock, so they stay responsive while a model loads.
    """

    def __init__(self, paths: Paths, opts: Options, device: str | torch.device = "cpu",
                 configs_dirs: Iterable[Path] = (CONFIGS_DIR,)) -> None:
        self.paths = paths
        self.opts = opts
        self.device = torch.device(device)
        self.configs_dirs = [Path(d) for d in configs_dirs]
        self.hash_cache = HashCache(paths.cache_file)
        self._load_lock = threading.RLock()  # held for a whole load / unload / VAE change
        self._state_lock = threading.RLock()  # held only to read or swap the fields below
        self._checkpoints: list[CheckpointInfo] = []
        self._vaes: list[VaeInfo] = []
        self._loaded: OrderedDict[str, SDModel] = OrderedDict()  # filename -> model, least recently used first
        self._hashing: dict[str, threading.Event] = {}  # filename -> set when its background hash is done
        self._current: str | None = None
        self.refresh()

    # -- discovery ---------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan checkpoints and VAEs. Known entries keep their identity; cached hashes fill in titles."""
        with self._state_lock:
            known = {c.filename: c for c in self._checkpoints}
            known_vaes = {v.filename: v for v in self._vaes}
        checkpoints = []
        for path, name in list_checkpoint_files(self.paths.ckpt_dir):
            info = known.get(str(path)) or CheckpointInfo(filename=str(path), name=name)
            info.sha256 = self.hash_cache.get("checkpoint", path)
            checkpoints.append(info)
        vaes = [known_vaes.get(v.filename, v) for v in sd_vae.list_vaes(self.paths.vae_dir, self.paths.ckpt_dir)]
        for vae in vaes:
            vae.sha256 = self.hash_cache.get("vae", Path(vae.filename))
        with self._state_lock:
            self._checkpoints, self._vaes = checkpoints, vaes

    def list_checkpoints(self) -> list[CheckpointInfo]:
        with self._state_lock:
            return list(self._checkpoints)

    def list_vaes(self) -> list[VaeInfo]:
        with self._state_lock:
            return list(self._vaes)

    def get_info(self, query: str) -> CheckpointInfo:
        """Find a checkpoint by title, name, model_name, name without extension, short or full SHA-256, or legacy
        hash. A title whose hash part is stale still finds the file by its name."""
        checkpoints = self.list_checkpoints()
        query = query.strip()
        found = _find_checkpoint(checkpoints, query)
        if found is None and (m := re.fullmatch(r"(.+) \[[0-9a-fA-F]{8,64}\]", query)):
            found = _find_checkpoint(checkpoints, m.group(1))
        if found is None:
            titles = ", ".join(c.title for c in checkpoints) or f"none (put models in {self.paths.ckpt_dir})"
            raise CheckpointNotFoundError(f"checkpoint {query!r} not found; available: {titles}")
        return found

    def calculate_hash(self, info: CheckpointInfo) -> str:
        """SHA-256 of the checkpoint (cached in cache.json); fills in ``info.sha256`` and so the title's hash. Waits
        for a background hash of the same file instead of hashing it twice."""
        self.wait_for_hash(info)
        info.sha256 = self.hash_cache.sha256("checkpoint", Path(info.filename))
        return info.sha256

    def wait_for_hash(self, info: CheckpointInfo, timeout: float | None = None) -> str | None:
        """The checkpoint's SHA-256 once a background hash of it (see ``BACKGROUND_HASH_BYTES``) is done; None if it
        is not known (never hashed, or still hashing after ``timeout`` seconds)."""
        with self._state_lock:
            done = self._hashing.get(info.filename)
        if done is not None:
            done.wait(timeout)
        return info.sha256

    def _hash_in_background(self, info: CheckpointInfo) -> bool:
        """Start hashing a large checkpoint without a sidecar on a low-priority thread; False when it is to be hashed
        (and verified) before its load instead."""
        path = Path(info.filename)
        if info.sha256 or any(p.is_file() for p in _sidecars(path)):
            return False
        if path.is_file() and path.stat().st_size < BACKGROUND_HASH_BYTES:
            return False
        with self._state_lock:
            if info.filename in self._hashing:
                return True
            done = self._hashing[info.filename] = threading.Event()

        def work() -> None:
            try:
                try:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
                except (AttributeError, OSError):
                    pass
                info.sha256 = self.hash_cache.sha256("checkpoint", path)
                log.info("hashed %s", info.title)
            except OSError as e:
                log.warning("could not hash %s: %s", path, e)
            finally:
                with self._state_lock:
                    self._hashing.pop(info.filename, None)
                done.set()

        threading.Thread(target=work, daemon=True, name="checkpoint-hash").start()
        return True

    def default_checkpoint(self) -> CheckpointInfo | None:
        """The checkpoint to start with: ``opts.sd_model_checkpoint`` if it names one, else the project's default
        model (``sd_config`` metadata ``default-tiny``), else the first checkpoint; None when there are none."""
        if self.opts.sd_model_checkpoint:
            try:
                return self.get_info(self.opts.sd_model_checkpoint)
            except CheckpointNotFoundError:
                log.warning("checkpoint %r from settings not found; choosing another", self.opts.sd_model_checkpoint)
        checkpoints = self.list_checkpoints()
        for info in checkpoints:
            if info.metadata().get("sd_config") == DEFAULT_MODEL_CONFIG:
                return info
        return checkpoints[0] if checkpoints else None

    def select_default(self) -> SDModel | None:
        """Load ``default_checkpoint()``, or when that fails the other checkpoints in order, so one broken file
        never leaves the app without a model. None when there are no checkpoints; raises the first
        ``CheckpointLoadError`` when none loads."""
        first = self.default_checkpoint()
        if first is None:
            return None
        candidates = [first, *(c for c in self.list_checkpoints() if c.filename != first.filename)]
        errors: list[CheckpointLoadError] = []
        for info in candidates:
            try:
                return self.load(info.filename)
            except CheckpointLoadError as e:
                log.error("%s; trying the next checkpoint", e)
                errors.append(e)
        raise errors[0]

    # -- loading -----------------------------------------------------------------------------------------------------
    @property
    def current(self) -> SDModel | None:
        with self._state_lock:
            return self._loaded.get(self._current) if self._current else None

    def loaded(self) -> list[SDModel]:
        """Models in memory, least recently used first."""
        with self._state_lock:
            return list(self._loaded.values())

    def load(self, name: str) -> SDModel:
        """Make the checkpoint named by ``name`` (title, name or hash) current, loading it unless it is cached.
        On failure raises ``CheckpointLoadError`` and the previous model stays loaded and current. A VAE that cannot
        be applied is logged and the checkpoint's own VAE used."""
        with self._load_lock:
            info = self.get_info(name)
            with self._state_lock:
                model = self._loaded.get(info.filename)
            fresh = model is None
            if model is None:
                model = self._load_checkpoint(info)
            try:
                self._apply_vae_choice(model, self.opts.sd_vae)
            except CheckpointLoadError as e:
                log.error("%s; using the checkpoint's own VAE", e)
                self._apply_vae_choice(model, sd_vae.NONE)
            live_previews.prepare(model)  # the cheap preview map of this VAE, fitted once (milliseconds)
            with self._state_lock:
                self._loaded[info.filename] = model
                self._loaded.move_to_end(info.filename)
                self._current = info.filename
            self._evict(self.opts.sd_checkpoints_limit)
        if fresh:
            from modules import script_callbacks

            script_callbacks.model_loaded_callback(model)
        return model

    def unload(self) -> None:
        """Release every loaded model (A1111's "unload checkpoint")."""
        with self._load_lock:
            with self._state_lock:
                self._current = None
            self._evict(0)

    def _evict(self, limit: int) -> None:
        """Release least recently used models (never the current one) until at most ``limit`` are loaded."""
        with self._state_lock:
            evictable = [f for f in self._loaded if f != self._current]
            evicted = [self._loaded.pop(f) for f in evictable[: max(0, len(self._loaded) - limit)]]
        for model in evicted:
            log.info("unloading %s", model.sd_checkpoint_info.title)
            model.release()
        if evicted:
            _free_memory(self.device)

    def _config_dir(self, name: str) -> Path | None:
        for base in self.configs_dirs:
            if (base / name / "model_index.json").is_file():
                return base / name
        return None

    def _load_checkpoint(self, info: CheckpointInfo) -> SDModel:
        path = Path(info.filename)
        if not path.exists():
            raise CheckpointLoadError(f"{info.name}: file not found at {path} (moved or deleted; refresh the list)")
        try:
            if not self._hash_in_background(info):
                self._hash_and_verify(info)
            if path.is_dir():
                pipe, family, prediction_type, config_dir = self._load_diffusers_folder(path)
            else:
                pipe, family, prediction_type, config_dir = self._load_single_file(path)
        except CheckpointLoadError:
            raise
        except Exception as e:
            raise CheckpointLoadError(f"{info.name}: could not be loaded: {type(e).__name__}: {e}") from e
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                _prepare(component, self.device)
        zero_terminal_snr = noise_schedule.declared_by_scheduler_config(pipe.scheduler.config)
        log.info("loaded %s (%s, %s%s)", info.title, family, prediction_type,
                 ", zero terminal SNR" if zero_terminal_snr else "")
        return SDModel(pipe=pipe, family=family, prediction_type=prediction_type, sd_checkpoint_info=info,
                       config_dir=config_dir, device=self.device, zero_terminal_snr=zero_terminal_snr)

    def _hash_and_verify(self, info: CheckpointInfo) -> None:
        """Hash the checkpoint; if ``<file>.sha256`` or ``<stem>.sha256`` lies beside it, the hashes must agree."""
        path = Path(info.filename)
        actual = self.calculate_hash(info)
        for sidecar in _sidecars(path):
            if sidecar.is_file():
                expected = sidecar.read_text(encoding="utf-8").split()[0].lower() if sidecar.stat().st_size else ""
                if expected != actual:
                    raise CheckpointLoadError(
                        f"{info.name}: SHA-256 mismatch: {sidecar.name} says {expected or '(empty)'}, the file is "
                        f"{actual}. The file is damaged or was replaced; download it again")
                return

    def _spec_for(self, path: Path, header: CheckpointHeader) -> ModelSpec:
        family = detect_family(header.keys)
        if family is None:
            raise CheckpointLoadError(
                f"{path.name}: not a Stable Diffusion checkpoint that this app knows (SD1.x, SD2.x, SDXL base or "
                "refiner): no UNet or no known text encoder keys")
        declared = declared_prediction_type(path, header)
        ztsnr = noise_schedule.declared_by_keys(header.keys)
        named = header.metadata.get("sd_config")
        if named:
            config_dir = self._config_dir(named)
            if config_dir is None:
                raise CheckpointLoadError(f"{path.name}: its metadata asks for config {named!r}, which is not in "
                                          f"{', '.join(map(str, self.configs_dirs))}")
            return ModelSpec(family, config_dir, declared or _scheduler_prediction_type(config_dir), header.input_channels,
                             ztsnr)
        config_name = family_config_name(family, declared or "epsilon")
        config_dir = self._config_dir(config_name)
        if config_dir is None:
            raise CheckpointLoadError(f"{path.name}: config {config_name!r} for {family} is missing")
        inpaint = header.input_channels == 9
        prediction_type = declared or (None if family == "sd2" and not inpaint else "epsilon")
        return ModelSpec(family, config_dir, prediction_type, header.input_channels, ztsnr)

    def _load_single_file(self, path: Path) -> tuple[DiffusionPipeline, Family, PredictionType, Path]:
        header = CheckpointHeader.of_safetensors(path) if path.suffix == ".safetensors" else None
        spec = self._spec_for(path, header) if header else None  # fail fast before reading gigabytes
        state_dict = read_state_dict(path)
        if spec is None:
            spec = self._spec_for(path, CheckpointHeader.of_state_dict(state_dict))
        pipe, spec = build_pipeline(state_dict, spec, self._config_dir)
        assert spec.prediction_type is not None
        return pipe, spec.family, spec.prediction_type, spec.config_dir

    def _load_diffusers_folder(self, path: Path) -> tuple[DiffusionPipeline, Family, PredictionType, Path]:
        from diffusers import DiffusionPipeline

        index = json.loads((path / "model_index.json").read_text())
        kwargs: dict[str, Any] = {}
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, **kwargs)
        if "XL" in index.get("_class_name", ""):
            family: Family = "sdxl" if getattr(pipe, "text_encoder", None) is not None else "sdxl-refiner"
        else:
            # OpenAI CLIP (SD1) uses quick_gelu, OpenCLIP (SD2) plain gelu.
            family = "sd2" if pipe.text_encoder.config.hidden_act == "gelu" else "sd1"
        prediction_type = _normalize_prediction_type(pipe.scheduler.config.get("prediction_type", "epsilon")) or "epsilon"
        return pipe, family, prediction_type, path

    # -- VAE ---------------------------------------------------------------------------------------------------------
    def apply_vae(self, choice: str | None = None) -> None:
        """Apply ``choice`` (default: ``opts.sd_vae``) to the current model; raises ``CheckpointLoadError`` for an
        unknown or unreadable VAE (the model keeps the VAE it had)."""
        with self._load_lock:
            if (model := self.current) is not None:
                self._apply_vae_choice(model, choice or self.opts.sd_vae)
                live_previews.prepare(model)

    def _apply_vae_choice(self, model: SDModel, choice: str) -> None:
        checkpoint = Path(model.sd_checkpoint_info.filename)
        try:
            wanted = sd_vae.resolve_vae(choice, checkpoint, self.list_vaes(), self.paths.vae_dir)
        except LookupError as e:
            raise CheckpointLoadError(str(e)) from None
        if wanted is model.vae_info:
            return
        pipe = model._pipe()
        if wanted is None:
            pipe.vae, model.base_vae, model.vae_info = model.base_vae, None, None
            return
        path = Path(wanted.filename)
        try:
            vae = _prepare(sd_vae.build_vae(read_state_dict(path), model.config_dir), self.device)
        except CheckpointLoadError:
            raise
        except Exception as e:
            raise CheckpointLoadError(f"VAE {wanted.name}: could not be loaded: {type(e).__name__}: {e}") from e
        wanted.sha256 = self.hash_cache.sha256("vae", path)
        if model.base_vae is None:
            model.base_vae = pipe.vae
        pipe.vae, model.vae_info = vae, wanted
        gc.collect()


def _sidecars(path: Path) -> tuple[Path, Path]:
    """Where a checkpoint's expected SHA-256 may lie: ``<file>.sha256`` or ``<stem>.sha256``."""
    return path.with_name(path.name + ".sha256"), path.with_suffix(".sha256")


def build_pipeline(state_dict: StateDict, spec: ModelSpec,
                   find_config: Callable[[str], Path | None]) -> tuple[DiffusionPipeline, ModelSpec]:
    """Assemble the pipeline from an original-layout state dict and ``spec.config_dir`` (no network). The UNet is
    built first so an unknown SD2 prediction type can be probed; ``find_config`` then supplies the matching folder."""
    import transformers
    from diffusers import DiffusionPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    config = str(spec.config_dir)
    common: dict[str, Any] = {"config": config, "local_files_only": True}
    unet_config = UNet2DConditionModel.load_config(config, subfolder="unet")
    overrides = {}
    if spec.input_channels and spec.input_channels != unet_config["in_channels"]:
        overrides["in_channels"] = spec.input_channels  # inpainting (9) checkpoints share the base architecture
    unet = UNet2DConditionModel.from_single_file(state_dict, subfolder="unet", **common, **overrides)
    if spec.prediction_type is None:
        prediction_type = probe_prediction_type(unet)
        config_dir = find_config(family_config_name(spec.family, prediction_type)) or spec.config_dir
        spec = replace(spec, prediction_type=prediction_type, config_dir=config_dir)
        config = common["config"] = str(config_dir)
        unet.register_to_config(sample_size=UNet2DConditionModel.load_config(config, subfolder="unet")["sample_size"])

    index = DiffusionPipeline.load_config(config)
    components: dict[str, Any] = {"unet": unet, "vae": sd_vae.build_vae(state_dict, spec.config_dir)}
    for name in ("text_encoder", "text_encoder_2"):
        _, class_name = index.get(name) or (None, None)
        if class_name:
            cls = getattr(transformers, class_name)
            components[name] = create_diffusers_clip_model_from_ldm(cls, state_dict, subfolder=name, **common)
    pipe = DiffusionPipeline.from_pretrained(config, local_files_only=True, **components)
    if pipe.scheduler.config.get("prediction_type") != spec.prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=spec.prediction_type)
    if spec.zero_terminal_snr:
        pipe.scheduler.register_to_config(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return pipe, spec
