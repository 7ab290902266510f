"""A1111 names of ``modules.extensions``."""
from __future__ import annotations

from typing import Any

from modules.a1111.paths_internal import extensions_builtin_dir  # noqa: F401 - A1111 name


def active() -> list[Any]:
    from modules import extensions

    return extensions.active_extensions()


def __getattr__(name: str) -> Any:
    if name == "extensions_dir":
        from modules.a1111 import paths_internal

        return paths_internal.extensions_dir
    from modules.a1111.missing import attribute_error

    raise attribute_error("modules.extensions", name)
