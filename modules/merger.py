"""The Checkpoint Merger (A1111's ``modelmerger`` tab): two or three checkpoints of one family into a new one.

- ``Weighted sum``: A·(1−M) + B·M; ``Add difference``: A + (B − C)·M; ``No interpolation``: A as it is (to bake in a
  VAE, save as float16 or discard weights).
- Memory: inputs are opened memory-mapped (``safetensors.safe_open``; ``.ckpt`` through
  ``torch.load(weights_only=True, mmap=True)``) and merged ONE TENSOR AT A TIME straight into the output file, so a
  merge needs about one tensor of RAM per input, never whole models. safetensors' Python API writes only whole
  dicts, so the output is written here in its documented layout (u64 header length, JSON header, raw data), the
  header first (every shape and dtype is known before any data is read), then each tensor as it is merged.
- The result goes to a temporary file renamed over the target at the end: a failed or interrupted merge leaves
  nothing, and an existing file is replaced only when ``overwrite`` is asked.
- Metadata as A1111: the inputs' metadata (``copy_metadata_fields``), ``sd_merge_recipe`` (JSON) and
  ``sd_merge_models`` (every model merged so far, by SHA-256). ``sd_config`` / ``prediction_type`` (what the loader
  needs to build the model) are always kept from A.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open

from modules.progress import JobState
from modules.sd_models import (PICKLE_EXTENSIONS, PICKLE_STAND_INS, CheckpointInfo, CheckpointLoadError, ModelManager,
                               UNET_INPUT_KEY, detect_family, read_state_dict)

Interpolation = Literal["No interpolation", "Weighted sum", "Add difference"]
ConfigSource = Literal["A, B or C", "B", "C", "Don't"]
VAE_PREFIX = "first_stage_model."
# Architecture facts the loader reads from the metadata: kept from A even when the inputs' metadata is not copied.
LOADER_METADATA = ("sd_config", "prediction_type", "modelspec.prediction_type")
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}
DTYPES_BY_NAME = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


class MergeError(ValueError):
    """A merge that cannot be done as asked; the message says why in the user's words."""


class MergeRequest(BaseModel):
    """A1111's ``modelmerger`` arguments (same names), plus ``overwrite``."""

    model_config = ConfigDict(extra="forbid")

    primary_model_name: str = Field(description="Model A: a checkpoint title, name or hash (/sdapi/v1/sd-models)")
    secondary_model_name: str | None = Field(None, description="Model B (needed unless No interpolation)")
    tertiary_model_name: str | None = Field(None, description="Model C (needed by Add difference)")
    interp_method: Interpolation = Field("Weighted sum", description="Weighted sum: A*(1-M) + B*M; "
                                         "Add difference: A + (B-C)*M; No interpolation: A")
    multiplier: float = Field(0.3, ge=0, le=1, description="M")
    save_as_half: bool = Field(False, description="store floating-point tensors as float16")
    custom_name: str = Field("", max_length=200, description="file name without extension (empty: made from the "
                             "models' names); saved in the checkpoint folder")
    checkpoint_format: Literal["safetensors"] = Field("safetensors", description="only safetensors is written")
    config_source: ConfigSource = Field("A, B or C", description="whose .yaml (beside the checkpoint) to copy")
    bake_in_vae: str | None = Field(None, description="a VAE name from /sdapi/v1/sd-vae whose weights replace "
                                    "first_stage_model.*; null or \"None\": keep A's")
    discard_weights: str = Field("", max_length=1000, description="regular expression: matching keys are left out")
    save_metadata: bool = Field(True, description="write metadata into the file")
    add_merge_recipe: bool = Field(True, description="write sd_merge_recipe and sd_merge_models")
    copy_metadata_fields: bool = Field(True, description="copy the merged models' own metadata")
    overwrite: bool = Field(False, description="replace a file of the same name")


@dataclass(frozen=True)
class MergeResult:
    path: Path
    info: CheckpointInfo
    message: str


# -- reading -----------------------------------------------------------------------------------------------------------

class _Reader:
    """One input checkpoint, memory-mapped: key names, shapes and dtypes without reading data; one tensor at a time."""

    def __init__(self, info: CheckpointInfo, stack: ExitStack) -> None:
        self.info = info
        path = Path(info.filename)
        if path.is_dir():
            raise MergeError(f"{info.name}: a diffusers folder cannot be merged; use single-file checkpoints "
                             "(.safetensors or .ckpt)")
        self.metadata: dict[str, str] = {}
        try:
            if path.suffix == ".safetensors":
                f = stack.enter_context(safe_open(str(path), "pt"))
                self.metadata = dict(f.metadata() or {})
                self.keys = list(f.keys())
                self._slice = f.get_slice
                self._get = f.get_tensor
            elif path.suffix in PICKLE_EXTENSIONS:
                sd = _load_pickle_mmap(path)
                self.keys = list(sd)
                self._get = sd.__getitem__
                self._slice = None
                self._sd = sd
            else:
                raise MergeError(f"{info.name}: unsupported file type {path.suffix!r}")
        except (OSError, SafetensorError) as e:
            raise MergeError(f"{info.name}: not a readable checkpoint (truncated or corrupt): {e}") from e
        except CheckpointLoadError as e:
            raise MergeError(str(e)) from None
        self.key_set = frozenset(self.keys)
        self.family = detect_family(self.keys)

    def shape_dtype(self, key: str) -> tuple[list[int], torch.dtype]:
        if self._slice is not None:
            s = self._slice(key)
            return list(s.get_shape()), DTYPES_BY_NAME[s.get_dtype()]
        t = self._sd[key]
        return list(t.shape), t.dtype

    def tensor(self, key: str) -> torch.Tensor:
        return self._get(key)


def _load_pickle_mmap(path: Path) -> dict[str, torch.Tensor]:
    """A ``.ckpt``'s tensors, memory-mapped; a pickle that would import code is refused (as ``read_state_dict``)."""
    try:
        with torch.serialization.safe_globals(PICKLE_STAND_INS):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an old (non-zip) pickle cannot be memory-mapped; a refused or damaged one
        data = read_state_dict(path)  # is read whole here, or refused with the reason (CheckpointLoadError)
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise MergeError(f"{path.name}: does not contain a state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


# -- writing -----------------------------------------------------------------------------------------------------------

def _write_safetensors(path: Path, plan: list[tuple[str, list[int], torch.dtype]], metadata: dict[str, str] | None,
                       tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Write the header from ``plan`` then each tensor from ``tensors`` (same order, same shapes and dtypes)."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, shape, dtype in plan:
        size = dtype.itemsize
        for dim in shape:
            size *= dim
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for (key, shape, dtype), (got_key, tensor) in zip(plan, tensors, strict=True):
            if got_key != key or list(tensor.shape) != shape or tensor.dtype != dtype:
                raise RuntimeError(f"merge wrote {got_key} {list(tensor.shape)} {tensor.dtype}, planned {key} {shape} {dtype}")
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        f.flush()
        os.fsync(f.fileno())


# -- the merge ---------------------------------------------------------------------------------------------------------

def default_name(req: MergeRequest, a: CheckpointInfo, b: CheckpointInfo | None) -> str:
    """A1111's generated name: ``A_<1-M>-B_<M>-<method>`` (``A`` alone without interpolation)."""
    if req.interp_method == "No interpolation" or b is None:
        return f"{a.model_name}-converted"
    m = round(req.multiplier, 2)
    suffix = "merged" if req.interp_method == "Weighted sum" else "add_difference"
    return f"{a.model_name}_{round(1 - m, 2)}-{b.model_name}_{m}-{suffix}"


def _target_name(name: str) -> str:
    name = name.strip().removesuffix(".safetensors").removesuffix(".ckpt")
    if not name or name in (".", "..") or re.search(r"[/\\:*?\"<>|\x00-\x1f]", name) or name.startswith("."):
        raise MergeError(f"custom_name: {name!r} is not a usable file name (no folders, no / \\ : * ? \" < > |)")
    return name


@dataclass(frozen=True)
class MergePlan:
    """What a request names, resolved and checked against the folders (nothing read from the models yet)."""

    infos: dict[str, CheckpointInfo]  # "primary", "secondary", "tertiary" -> checkpoint
    discard: re.Pattern[str] | None
    vae_path: Path | None
    target: Path


def check_request(models: ModelManager, req: MergeRequest) -> MergePlan:
    """Resolve the models, VAE and target of ``req``; ``MergeError`` naming the field for anything wrong. Cheap, so
    the API runs it before queueing (and the job again, as the folders may have changed meanwhile)."""
    method = req.interp_method
    try:
        discard = re.compile(req.discard_weights) if req.discard_weights else None
    except re.error as e:
        raise MergeError(f"discard_weights: not a valid regular expression: {e}") from None
    needed = {"Weighted sum": ("primary", "secondary"), "Add difference": ("primary", "secondary", "tertiary"),
              "No interpolation": ("primary",)}[method]
    infos: dict[str, CheckpointInfo] = {}
    for role in needed:
        query = getattr(req, f"{role}_model_name")
        if not query:
            raise MergeError(f"{role}_model_name: {method} needs a {role} model")
        try:
            infos[role] = models.get_info(query)
        except LookupError as e:
            raise MergeError(f"{role}_model_name: {e}") from None

    vae_path = _vae_path(models, req.bake_in_vae)
    name = _target_name(req.custom_name) if req.custom_name.strip() else default_name(
        req, infos["primary"], infos.get("secondary"))
    target = models.paths.ckpt_dir / f"{name}.safetensors"
    if target.exists() and not req.overwrite:
        raise MergeError(f"custom_name: {target.name} already exists in {target.parent}; choose another name or "
                         "ask to overwrite it")
    if any(m.sd_checkpoint_info.filename == str(target) for m in models.loaded()):
        raise MergeError(f"custom_name: {target.name} is loaded now; load another checkpoint or choose another name")
    if any(Path(i.filename) == target for i in infos.values()):
        raise MergeError(f"custom_name: {target.name} is one of the models being merged; choose another name")
    return MergePlan(infos, discard, vae_path, target)


def merge_checkpoints(models: ModelManager, req: MergeRequest, state: JobState | None = None) -> MergeResult:
    """Merge as ``req`` asks, save into the checkpoint folder, refresh the list and hash the result.
    Raises ``MergeError`` (a ``ValueError``) for anything the user can fix; nothing is written then."""
    checked = check_request(models, req)
    infos, discard, vae_path, target = checked.infos, checked.discard, checked.vae_path, checked.target
    state = state or JobState()
    with ExitStack() as stack:
        readers = {role: _Reader(info, stack) for role, info in infos.items()}
        a, b, c = readers["primary"], readers.get("secondary"), readers.get("tertiary")
        _check_families(readers)
        vae = _read_vae(vae_path) if vae_path else {}
        plan, sources = _plan(a, b, c, req, vae, discard)
        metadata = _metadata(models, req, readers, vae_path) if req.save_metadata else None

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for index, ((key, _, dtype), source) in enumerate(zip(plan, sources)):
                if state.interrupted:
                    raise MergeError("merge interrupted: nothing was saved")
                state.sampling_step = index
                yield key, source().to(dtype)

        state.sampling_steps = len(plan)
        state.textinfo = f"Merging {len(plan)} tensors into {target.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            _write_safetensors(tmp, plan, metadata, tensors())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    yaml = _config_to_copy(req.config_source, infos)
    if yaml is not None:
        shutil.copyfile(yaml, target.with_suffix(".yaml"))
    else:  # a config left from an earlier file of this name would describe the new one wrongly
        target.with_suffix(".yaml").unlink(missing_ok=True)
    models.refresh()
    info = models.get_info(target.name)
    models.calculate_hash(info)
    return MergeResult(target, info, f"Checkpoint saved to {target} ({info.title})")


def _check_families(readers: dict[str, _Reader]) -> None:
    families = {role: r.family for role, r in readers.items()}
    for role, family in families.items():
        if family is None:
            raise MergeError(f"{role}_model_name: {readers[role].info.name} is not a Stable Diffusion checkpoint this "
                             "app knows (SD1.x, SD2.x, SDXL base or refiner)")
    if len(set(families.values())) > 1:
        said = ", ".join(f"{readers[r].info.name} is {f}" for r, f in families.items())
        raise MergeError(f"only checkpoints of the same family can be merged: {said}")


def _vae_path(models: ModelManager, choice: str | None) -> Path | None:
    if not choice or choice == "None":
        return None
    for vae in models.list_vaes():
        if choice in (vae.name, vae.filename):
            return Path(vae.filename)
    names = ", ".join(["None", *(v.name for v in models.list_vaes())])
    raise MergeError(f"bake_in_vae: VAE {choice!r} not found; available: {names}")


def _read_vae(path: Path) -> dict[str, torch.Tensor]:
    """A VAE file's tensors keyed as in a checkpoint (``first_stage_model.``...); a VAE is small, read whole."""
    try:
        sd = read_state_dict(path)
    except CheckpointLoadError as e:
        raise MergeError(f"bake_in_vae: {e}") from None
    return {k if k.startswith(VAE_PREFIX) else VAE_PREFIX + k: v for k, v in sd.items()
            if not k.startswith("loss.") and not k.startswith("model_ema.")}


def _plan(a: _Reader, b: _Reader | None, c: _Reader | None, req: MergeRequest, vae: dict[str, torch.Tensor],
          discard: re.Pattern[str] | None) -> tuple[list[tuple[str, list[int], torch.dtype]],
                                                    list[Callable[[], torch.Tensor]]]:
    """Per kept key of A: its shape and output dtype, and how to compute it (called only while writing). A key that
    B (or C) lacks, and integer tensors (``position_ids``), are A's as they are."""
    plan: list[tuple[str, list[int], torch.dtype]] = []
    sources: list[Callable[[], torch.Tensor]] = []
    others = [r for r in (b, c) if r is not None]
    for key in a.keys:
        if discard is not None and discard.search(key):
            continue
        shape, dtype = a.shape_dtype(key)
        if key in vae:
            if list(vae[key].shape) != shape:
                raise MergeError(f"bake_in_vae: {key} has shape {list(vae[key].shape)} in the VAE and {shape} in the "
                                 "model: that VAE is for another model family")
            source = (lambda t=vae[key]: t)
        elif others and dtype.is_floating_point and all(key in r.key_set for r in others):
            for r in others:
                if (other := r.shape_dtype(key)[0]) != shape:
                    raise MergeError(f"{key} has shape {other} in {r.info.name} and {shape} in {a.info.name}: the "
                                     "models have different architectures (an inpainting model with a normal one?)")
            source = _merged(a, b, c, key, req.interp_method, req.multiplier)
        else:
            source = (lambda key=key: a.tensor(key))
        plan.append((key, shape, torch.float16 if req.save_as_half and dtype.is_floating_point else dtype))
        sources.append(source)
    return plan, sources


def _merged(a: _Reader, b: _Reader, c: _Reader | None, key: str, method: str,
            multiplier: float) -> Callable[[], torch.Tensor]:
    """How one tensor is merged (in float32, whatever the inputs' dtype). Never in place on an input: a float32
    tensor from ``safe_open`` is a view of the file's private mapping, and writing into it would copy those pages
    into anonymous memory that stays until the file is closed (the whole model, by the end)."""
    def compute() -> torch.Tensor:
        ta = a.tensor(key).float()
        if method == "Weighted sum":
            return ta.mul(1 - multiplier).add_(b.tensor(key).float(), alpha=multiplier)
        assert c is not None
        return ta.add(b.tensor(key).float().sub(c.tensor(key).float()), alpha=multiplier)
    return compute


def _metadata(models: ModelManager, req: MergeRequest, readers: dict[str, _Reader],
              vae_path: Path | None) -> dict[str, str]:
    """A1111's merge metadata: the inputs' own (A's last, so it wins), the recipe, and every model merged so far."""
    a = readers["primary"]
    metadata: dict[str, str] = {}
    if req.copy_metadata_fields:
        for reader in reversed(list(readers.values())):
            metadata.update(reader.metadata)
    metadata.update({k: a.metadata[k] for k in LOADER_METADATA if k in a.metadata})
    metadata["format"] = "pt"
    if req.add_merge_recipe:
        hashes = {role: models.calculate_hash(r.info) for role, r in readers.items()}
        recipe = {
            "type": "webui", "primary_model_hash": hashes["primary"],
            "secondary_model_hash": hashes.get("secondary"), "tertiary_model_hash": hashes.get("tertiary"),
            "interp_method": req.interp_method, "multiplier": req.multiplier, "save_as_half": req.save_as_half,
            "custom_name": req.custom_name, "config_source": req.config_source,
            "bake_in_vae": vae_path.name if vae_path else None, "discard_weights": req.discard_weights,
            "is_inpainting": a.shape_dtype(UNET_INPUT_KEY)[0][1] == 9 if UNET_INPUT_KEY in a.key_set else False,
            "is_instruct_pix2pix": a.shape_dtype(UNET_INPUT_KEY)[0][1] == 8 if UNET_INPUT_KEY in a.key_set else False,
        }
        merged_models: dict[str, object] = {}
        for role, reader in readers.items():
            try:
                merged_models.update(json.loads(reader.metadata.get("sd_merge_models", "{}")))
            except json.JSONDecodeError:
                pass
            own_recipe = reader.metadata.get("sd_merge_recipe")
            merged_models[hashes[role]] = {"name": reader.info.name_for_extra, "legacy_hash": reader.info.legacy_hash,
                                           "sd_merge_recipe": json.loads(own_recipe) if own_recipe else None}
        metadata["sd_merge_recipe"] = json.dumps(recipe)
        metadata["sd_merge_models"] = json.dumps(merged_models)
    return metadata


def _config_to_copy(source: str, infos: dict[str, CheckpointInfo]) -> Path | None:
    """A1111's "Copy config from": the ``.yaml`` beside A, B or C (the first there), beside B, beside C, or none."""
    roles = {"A, B or C": ("primary", "secondary", "tertiary"), "B": ("secondary",), "C": ("tertiary",),
             "Don't": ()}[source]
    for role in roles:
        if role in infos and (yaml := Path(infos[role].filename).with_suffix(".yaml")).is_file():
            return yaml
    return None
