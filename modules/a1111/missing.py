"""Errors that say exactly which A1111 name this web UI does not provide."""
from __future__ import annotations

import importlib.abc
import sys

NOTE = "an A1111 name this web UI does not provide"


def attribute_error(module: str, name: str) -> AttributeError:
    """``modules.shared has no attribute 'foo' (an A1111 name this web UI does not provide)``."""
    return AttributeError(f"{module} has no attribute {name!r} ({NOTE})", name=name)


class _MissingModuleFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: an import of ``modules.<x>`` that no other finder found fails with a message that
    names the A1111 module (still a ``ModuleNotFoundError``, so ``try: import ... except ImportError`` works)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if fullname.startswith("modules.") and fullname.count(".") == 1:
            raise ModuleNotFoundError(f"No module named {fullname!r} ({NOTE})", name=fullname)
        return None


_finder = _MissingModuleFinder()


def install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)
