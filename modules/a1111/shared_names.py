"""A1111 names of ``modules.shared`` beyond ``opts``/``state``/``sd_model`` (served by ``modules.shared``'s
``__getattr__``): ``cmd_opts``, ``prompt_styles``, ``sd_upscalers``, ``total_tqdm``, ``latent_upscale_modes`` ..."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modules.a1111.missing import attribute_error
from modules.a1111.options import OptionHTML, OptionInfo, options_section  # noqa: F401 - A1111 names

__all__ = ["OptionHTML", "OptionInfo", "options_section", "hide_dirs", "styles_filename", "config_filename",
           "xformers_available", "parallel_processing_allowed", "restricted_opts", "CmdOpts",
           "TotalTQDM", "total_tqdm"]

hide_dirs = {"visible": True}      # A1111's --hide-ui-dir-config is not a flag here: folders are shown
styles_filename = "styles.csv"
config_filename = "config.json"
xformers_available = False
parallel_processing_allowed = True
restricted_opts: set[str] = set()


def latent_upscale_modes_table() -> dict[str, dict[str, Any]]:
    from modules.processing import LATENT_UPSCALE_MODES

    return {name: {"mode": mode, "antialias": antialias} for name, (mode, antialias) in LATENT_UPSCALE_MODES.items()}


class CmdOpts(argparse.Namespace):
    """``shared.cmd_opts``: the app's parsed flags (extensions' own flags included) plus A1111's folder flags filled
    from the running app's folders. A name that is neither raises an error naming it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise attribute_error("modules.shared.cmd_opts", name)


def build_cmd_opts(args: argparse.Namespace | None, paths: Any) -> CmdOpts:
    values: dict[str, Any] = {
        # A1111 flags the app has no equivalent of, at A1111's defaults
        "allow_code": False, "skip_install": False, "share": False, "enable_insecure_extension_access": False,
        "disable_extension_access": False, "hide_ui_dir_config": False, "freeze_settings": False,
        "no_half": True, "no_half_vae": True, "medvram": False, "lowvram": False, "xformers": False,
        "opt_sdp_attention": False, "theme": None, "device_id": None, "disable_safe_unpickle": False,
        "ngrok": None, "administrator": False, "disable_extra_extensions": False, "no_download_sd_model": True,
    }
    values.update(vars(args) if args is not None else {})
    folders = {
        "data_dir": paths.data_dir, "models_dir": paths.data_dir / "models", "ckpt_dir": paths.ckpt_dir,
        "vae_dir": paths.vae_dir, "lora_dir": paths.lora_dir, "embeddings_dir": paths.embeddings_dir,
        "hypernetwork_dir": paths.data_dir / "models" / "hypernetworks",
        "textual_inversion_templates_dir": Path(__file__).resolve().parent.parent / "training" / "templates",
        "extensions_dir": paths.extensions_dir,
    }
    for name, folder in folders.items():
        if values.get(name) is None:
            values[name] = str(folder)
    values.setdefault("ui_settings_file", str(paths.config_file))
    values.setdefault("styles_file", [str(paths.data_dir / styles_filename)])
    return CmdOpts(**values)


class TotalTQDM:
    """A1111's console bar over all the steps of a job (``updateTotal``, ``update``, ``clear``)."""

    def __init__(self) -> None:
        self._tqdm = None

    def reset(self) -> None:
        from tqdm import tqdm

        from modules import shared

        self._tqdm = tqdm(desc="Total progress", total=shared.state.job_count * shared.state.sampling_steps,
                          position=1)

    def update(self) -> None:
        if self._tqdm is None:
            self.reset()
        self._tqdm.update()

    def updateTotal(self, new_total: int) -> None:  # noqa: N802 - A1111 name
        if self._tqdm is None:
            self.reset()
        self._tqdm.total = new_total

    def clear(self) -> None:
        if self._tqdm is not None:
            self._tqdm.refresh()
            self._tqdm.close()
            self._tqdm = None


total_tqdm = TotalTQDM()


SHARED_ITEMS = ("list_checkpoint_tiles", "refresh_checkpoints", "list_samplers")


def lookup(name: str) -> Any:
    """The A1111 ``shared`` name ``name`` (``modules.shared``'s fallback)."""
    if name in __all__:
        return globals()[name]
    if name == "latent_upscale_modes":
        return latent_upscale_modes_table()
    if name in SHARED_ITEMS:   # A1111's shared re-exports these functions of shared_items
        from modules.a1111 import shared_items

        return getattr(shared_items, name)
    if name == "sd_upscalers":
        from modules.a1111 import upscalers

        return upscalers.source()
    raise attribute_error("modules.shared", name)
