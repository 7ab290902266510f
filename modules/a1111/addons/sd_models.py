"""A1111 names of ``modules.sd_models`` over the running app's ``ModelManager``."""
from __future__ import annotations

from typing import Any

from modules.a1111._runtime import models, runtime


def __getattr__(name: str) -> Any:
    if name == "checkpoints_list":        # title -> CheckpointInfo
        return {info.title: info for info in models().list_checkpoints()}
    if name == "checkpoint_aliases":
        aliases: dict[str, Any] = {}
        for info in models().list_checkpoints():
            for alias in (info.title, info.name, info.model_name, info.sha256, info.shorthash):
                if alias:
                    aliases.setdefault(alias, info)
        return aliases
    from modules.a1111.missing import attribute_error

    raise attribute_error("modules.sd_models", name)


def get_closet_checkpoint_match(search_string: str) -> Any:
    """The checkpoint ``search_string`` names (title, file name, model name or hash), else None. (A1111's spelling.)"""
    from modules.sd_models import CheckpointNotFoundError

    try:
        return models().get_info(search_string)
    except (CheckpointNotFoundError, LookupError):
        return None


def list_models() -> None:
    models().refresh()


def select_checkpoint() -> Any:
    current = models().current
    return current.sd_checkpoint_info if current is not None else models().default_checkpoint()


def reload_model_weights(sd_model: Any = None, info: Any = None, forced_reload: bool = False) -> Any:
    """Load the checkpoint ``info`` (a ``CheckpointInfo``, default: the configured one) and make it current."""
    rt = runtime()
    wanted = info.title if info is not None else rt.opts.sd_model_checkpoint
    return rt.switch_model(wanted) if wanted else models().select_default()


def unload_model_weights(sd_model: Any = None, info: Any = None) -> None:
    models().unload()


class _ModelData:
    """``sd_models.model_data``: the loaded model."""

    @property
    def sd_model(self) -> Any:
        return models().current

    def get_sd_model(self) -> Any:
        return models().current

    @property
    def loaded_sd_models(self) -> list[Any]:
        return list(models().loaded())


model_data = _ModelData()
