"""A1111 names of ``modules.sd_vae``."""
from __future__ import annotations

from typing import Any

from modules.a1111._runtime import models


def __getattr__(name: str) -> Any:
    if name == "vae_dict":                    # VAE name -> file
        return {vae.name: vae.filename for vae in models().list_vaes()}
    if name == "loaded_vae_file":
        current = models().current
        return getattr(current, "sd_vae_name", None) if current is not None else None
    from modules.a1111.missing import attribute_error

    raise attribute_error("modules.sd_vae", name)


def refresh_vae_list() -> None:
    models().refresh()


def reload_vae_weights(sd_model: Any = None, vae_file: str | None = None) -> Any:
    """Apply the VAE choice (``opts.sd_vae``, or the VAE file given) to the loaded model."""
    from pathlib import Path

    models().apply_vae(Path(vae_file).name if vae_file else None)
    return models().current
