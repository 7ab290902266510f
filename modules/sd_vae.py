"""Separate VAE files: discovery, the A1111 ``sd_vae`` choice, and building an ``AutoencoderKL`` from a state dict.

The ``sd_vae`` option holds ``"Automatic"``, ``"None"`` or a VAE name (the file's base name, as A1111 lists it):

- ``"None"``: the checkpoint's own VAE.
- ``"Automatic"``: a VAE file named like the checkpoint if there is one (``<ckpt stem>.vae.safetensors`` /
  ``.vae.pt`` / ``.vae.ckpt`` beside the checkpoint, or ``<ckpt stem>.<ext>`` / ``<ckpt stem>.vae.<ext>`` in
  ``models/VAE``), else the checkpoint's own.
- a name: that file.

Reading files safely, hashing and swapping the VAE of a loaded model are the ``ModelManager``'s job
(``modules/sd_models.py``); this module knows only where VAE files are and how to build one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
AUTOMATIC = "Automatic"
NONE = "None"


@dataclass(eq=False)
class VaeInfo:
    filename: str
    name: str  # base name with extension: the value the ``sd_vae`` option holds
    sha256: str | None = None

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def shorthash(self) -> str | None:
        """A1111's "VAE hash" (10 hex digits of the file's SHA-256), once known."""
        return self.sha256[:10] if self.sha256 else None


def _stem(path: Path) -> str:
    """``foo.vae.safetensors`` and ``foo.safetensors`` both name the VAE ``foo``."""
    return path.stem.removesuffix(".vae")


def list_vaes(vae_dir: Path, ckpt_dir: Path) -> list[VaeInfo]:
    """Every file in ``vae_dir`` (recursively) plus ``*.vae.*`` files among the checkpoints, sorted by name."""
    found: dict[str, VaeInfo] = {}
    candidates: list[Path] = []
    if vae_dir.is_dir():
        candidates += [p for p in vae_dir.rglob("*") if p.suffix in VAE_EXTENSIONS]
    if ckpt_dir.is_dir():
        candidates += [p for p in ckpt_dir.rglob("*.vae.*") if p.suffix in VAE_EXTENSIONS]
    for path in sorted(candidates):
        if path.is_file():
            found.setdefault(path.name, VaeInfo(filename=str(path), name=path.name))
    return sorted(found.values(), key=lambda v: v.name.lower())


def resolve_vae(choice: str, checkpoint_path: Path, vaes: list[VaeInfo], vae_dir: Path) -> VaeInfo | None:
    """The VAE file the ``sd_vae`` choice means for this checkpoint, or None for the checkpoint's own VAE."""
    if choice == NONE:
        return None
    if choice == AUTOMATIC:
        stem = _stem(checkpoint_path)
        beside = [v for v in vaes if Path(v.filename).parent == checkpoint_path.parent and _stem(Path(v.filename)) == stem]
        in_vae_dir = [v for v in vaes if Path(v.filename).is_relative_to(vae_dir) and _stem(Path(v.filename)) == stem]
        matches = beside + in_vae_dir
        return matches[0] if matches else None
    for vae in vaes:
        if choice in (vae.name, vae.filename):
            return vae
    raise LookupError(f"VAE {choice!r} not found; available: {', '.join([AUTOMATIC, NONE] + [v.name for v in vaes])}")


def build_vae(state_dict: dict[str, torch.Tensor], config_dir: Path) -> AutoencoderKL:
    """An ``AutoencoderKL`` with the architecture of ``config_dir/vae`` from an original-layout VAE state dict (a
    standalone VAE file, or a whole checkpoint whose keys start with ``first_stage_model.``)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_single_file(state_dict, config=str(config_dir), subfolder="vae", local_files_only=True)
    return vae.eval()
