"""A1111 names of ``modules.paths``."""
from __future__ import annotations

from modules.a1111.paths_internal import extensions_builtin_dir, script_path, sd_configs_path  # noqa: F401


def __getattr__(name: str):  # noqa: ANN201 - data-dir dependent folders, as in paths_internal
    from modules.a1111 import paths_internal

    return getattr(paths_internal, name)
