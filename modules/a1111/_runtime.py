"""The running app, for the compat modules (None in a bare test)."""
from __future__ import annotations

from typing import Any


def runtime() -> Any:
    from modules import shared

    return shared.runtime


def models() -> Any:
    rt = runtime()
    if rt is None:
        raise RuntimeError("the web UI is not running: there are no models")
    return rt.models
