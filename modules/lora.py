"""LoRA: ``<lora:name:weight>`` tags apply kohya/A1111 LoRA files from ``models/Lora`` with diffusers' PEFT support.

Files are ``.safetensors`` anywhere under the LoRA folder; a LoRA is named by its file name without extension, or
by its alias (``ss_output_name`` in the file's metadata). Tag arguments, as in A1111::

    <lora:name>                 text encoder and UNet at 1.0
    <lora:name:0.8>             both at 0.8
    <lora:name:0.5:1.0>         text encoder 0.5, UNet 1.0 (also ``te=0.5``, ``unet=1.0``)

Applying is diffusers' job, not a hand-written merge: ``pipe.load_lora_weights(state_dict, adapter_name=...)``
converts the kohya keys and adds PEFT adapter layers next to the model's weights, ``pipe.set_adapters`` sets each
adapter's weight per component. Base weights are never changed. At the end of a job the adapters are disabled (the
model computes exactly what it did without them) and stay loaded, so the next job with the same LoRAs starts at
once; a job that uses other LoRAs deletes the adapters it does not need, and a job without LoRAs removes the adapter
layers altogether. An adapter's name is derived from its file's path, size and modification time, so a file that
changed on disk is loaded again.

A name with no file is reported in ``p.comments`` ("Lora not found: x"), a file diffusers cannot load (corrupt, or
made for another model family) as "Lora could not be loaded: x (why)"; the job goes on without them. The infotext
gets ``Lora hashes: "name: hash"`` with A1111's 12-digit "addnet" hash of each LoRA used (the file's
``sshs_model_hash`` metadata when it has one).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modules.extra_networks import (SHORT_HASH_LENGTH, ExtraNetwork, ExtraNetworkParams, FileHashes, add_hashes,
                                    comment)

log = logging.getLogger(__name__)

LORA_SUFFIX = ".safetensors"
ADAPTER_PREFIX = "lora_"
"""Every adapter this module loads has a name starting with this; others are not touched (except by ``unload``)."""
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
COMPONENTS = ("unet", *TEXT_ENCODERS)


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash of a ``.safetensors`` file: SHA-256 of the bytes after the header (8-byte length + JSON),
    so that editing only the metadata keeps the hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_length)
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: Path) -> dict[str, Any]:
    """A safetensors file's metadata; values that are JSON objects (``ss_tag_frequency``, ...) are decoded, as A1111
    shows them. An unreadable file has none."""
    try:
        with safe_open(path, "pt") as f:
            raw = f.metadata() or {}
    except Exception as error:  # noqa: BLE001 - listed anyway; loading it reports the problem
        log.warning("lora: cannot read the metadata of %s: %s", path, error)
        return {}
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        metadata[key] = value
        if value.startswith("{"):
            with contextlib.suppress(ValueError):
                metadata[key] = json.loads(value)
    return metadata


@dataclass(eq=False)
class LoraOnDisk:
    """A LoRA file (A1111's ``NetworkOnDisk``)."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(repr=False)

    @property
    def alias(self) -> str:
        """The name the LoRA was trained under (``ss_output_name``), else the file name."""
        return str(self.metadata.get("ss_output_name") or self.name)


class LoraLibrary:
    """The LoRA files under one folder, scanned on first use, on ``refresh`` and when a tag names an unknown one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._by_name: dict[str, LoraOnDisk] | None = None
        self._by_alias: dict[str, LoraOnDisk] = {}
        self._hashes = FileHashes(addnet_hash)

    def refresh(self) -> None:
        """Scan the folder again (``/sdapi/v1/refresh-loras``). Of two files with the same name the later path wins."""
        paths = sorted(self.directory.rglob(f"*{LORA_SUFFIX}"), key=lambda p: str(p).lower()) \
            if self.directory.is_dir() else []
        by_name = {path.stem: LoraOnDisk(path.stem, path, read_metadata(path)) for path in paths if path.is_file()}
        by_alias = {lora.alias: lora for lora in by_name.values() if lora.alias not in by_name}
        with self._lock:
            self._by_name, self._by_alias = by_name, by_alias

    def loras(self) -> list[LoraOnDisk]:
        if self._by_name is None:
            self.refresh()
        with self._lock:
            return list(self._by_name.values())

    def find(self, name: str) -> LoraOnDisk | None:
        """The LoRA with this file name or alias; the folder is scanned again before giving up."""
        for attempt in range(2):
            if attempt or self._by_name is None:
                self.refresh()
            with self._lock:
                found = self._by_name.get(name) or self._by_alias.get(name)
            if found is not None:
                return found
        return None

    def short_hash(self, lora: LoraOnDisk) -> str | None:
        """The ``Lora hashes`` value: 12 hex digits of ``sshs_model_hash`` or of the addnet hash (None: unreadable)."""
        value = lora.metadata.get("sshs_model_hash") or self._hashes(lora.path)
        return str(value)[:SHORT_HASH_LENGTH] if value else None

    def api_listing(self) -> list[dict[str, Any]]:
        """``/sdapi/v1/loras``: ``[{name, alias, path, metadata}]``."""
        return [{"name": lora.name, "alias": lora.alias, "path": str(lora.path), "metadata": lora.metadata}
                for lora in self.loras()]


# --------------------------------------------------------------------------------------------------------------------
# Applying LoRAs to a model


@dataclass(frozen=True)
class LoraRequest:
    """One ``<lora:...>`` tag: the name as written, its file and its weights."""

    name: str
    lora: LoraOnDisk
    te_weight: float
    unet_weight: float


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"weight {text!r} is not a finite number")
    return value


def lora_weights(params: ExtraNetworkParams) -> tuple[float, float]:
    """``(text encoder weight, UNet weight)`` of a tag: ``name[:te[:unet]]`` with ``te=``/``unet=`` overriding;
    te defaults to 1.0 and unet to te. Raises ``ValueError`` for a weight that is not a finite number."""
    te = _weight(params.positional[1]) if len(params.positional) > 1 else 1.0
    te = _weight(params.named["te"]) if "te" in params.named else te
    unet = _weight(params.positional[2]) if len(params.positional) > 2 else te
    unet = _weight(params.named["unet"]) if "unet" in params.named else unet
    return te, unet


def adapter_name(lora: LoraOnDisk) -> str:
    """The PEFT adapter name for the file's current contents (a valid module name: no dots)."""
    stat = lora.path.stat()
    key = f"{lora.path}\0{stat.st_mtime_ns}\0{stat.st_size}"
    return ADAPTER_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def loaded_adapters(pipe: Any) -> set[str]:
    """The LoRA adapters this module loaded into ``pipe`` (in any component)."""
    return {name for names in pipe.get_list_adapters().values() for name in names if name.startswith(ADAPTER_PREFIX)}


def has_adapter_layers(pipe: Any) -> bool:
    """Whether any component of ``pipe`` holds PEFT adapter layers (loaded, disabled or emptied)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    components = [getattr(pipe, name, None) for name in COMPONENTS]
    return any(isinstance(module, BaseTunerLayer)
               for component in components if isinstance(component, torch.nn.Module)
               for module in component.modules())


def unload(model: Any) -> None:
    """Remove every adapter layer from ``model``: its modules are exactly the base model's again."""
    if has_adapter_layers(model.pipe):
        model.pipe.unload_lora_weights()


def disable(model: Any) -> None:
    """Switch the loaded adapters off, keeping them for the next job: the model computes its base outputs."""
    if loaded_adapters(model.pipe):
        model.pipe.disable_lora()


def apply_loras(model: Any, requests: Sequence[LoraRequest]) -> dict[str, str]:
    """Make exactly ``requests`` active on ``model``: load the adapters it lacks, delete the ones not requested,
    set the weights (the same file requested twice gets the sum). No request: no adapter layers at all.

    Returns the requests that could not be applied: name as written -> why.
    """
    pipe = model.pipe
    failures: dict[str, str] = {}
    weights: dict[str, list[float]] = {}  # adapter -> [text encoder weight, UNet weight]
    sources: dict[str, list[LoraRequest]] = {}  # adapter -> the tags naming it
    for request in requests:
        try:
            adapter = adapter_name(request.lora)
        except OSError as error:
            failures[request.name] = str(error)
            continue
        total = weights.setdefault(adapter, [0.0, 0.0])
        total[0] += request.te_weight
        total[1] += request.unet_weight
        sources.setdefault(adapter, []).append(request)

    present = loaded_adapters(pipe)
    if present - weights.keys():
        pipe.delete_adapters(sorted(present - weights.keys()))
    with torch.inference_mode(False):  # adapter weights must be ordinary tensors, whatever mode the job runs in
        for adapter, tags in sources.items():
            if adapter in present:
                continue
            path = tags[0].lora.path
            try:
                with warnings.catch_warnings():  # PEFT warns whenever a model gets a second adapter: that is the plan
                    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                    pipe.load_lora_weights(load_file(path), adapter_name=adapter)
                if adapter not in loaded_adapters(pipe):
                    raise ValueError("no weights for this model")
            except Exception as error:  # noqa: BLE001 - a broken or foreign file skips this LoRA, not the job
                log.warning("lora: cannot load %s: %s", path, error)
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                failures.update({tag.name: reason for tag in tags})
                if adapter in loaded_adapters(pipe):
                    pipe.delete_adapters(adapter)
                del weights[adapter]

    if not weights:
        unload(model)
        return failures
    components = pipe.get_list_adapters()
    per_adapter = [{component: te if component in TEXT_ENCODERS else unet
                    for component, names in components.items() if adapter in names}
                   for adapter, (te, unet) in weights.items()]
    pipe.enable_lora()
    pipe.set_adapters(list(weights), adapter_weights=per_adapter)
    return failures


class LoraNetwork(ExtraNetwork):
    """The ``lora`` extra network (A1111's ``ExtraNetworkLora``) over the files of a ``LoraLibrary``."""

    def __init__(self, library: LoraLibrary) -> None:
        super().__init__("lora")
        self.library = library

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        requests: list[LoraRequest] = []
        missing: list[str] = []
        for params in params_list:
            name = params.positional[0] if params.positional else ""
            try:
                te, unet = lora_weights(params)
            except ValueError as error:
                comment(p, f"Lora {name}: {error}")
                continue
            lora = self.library.find(name)
            if lora is None:
                missing.append(name)
            else:
                requests.append(LoraRequest(name, lora, te, unet))
        if missing:
            comment(p, f"Lora not found: {', '.join(missing)}")
        failures = apply_loras(p.sd_model, requests)
        for name, reason in failures.items():
            comment(p, f"Lora could not be loaded: {name} ({reason})")
        add_hashes(p, "Lora hashes", {request.name: self.library.short_hash(request.lora)
                                      for request in requests if request.name not in failures})

    def deactivate(self, p: Any) -> None:
        disable(p.sd_model)
