"""A1111's ``modules.shared`` as a thin facade for extensions: ``opts``, ``state``, ``cmd_opts``, ``sd_model``.

The app itself passes a ``Runtime`` explicitly; this module only mirrors the one that is running so that code written
for A1111 (``from modules import shared; shared.opts.CLIP_stop_at_last_layers``) keeps working.
"""
from __future__ import annotations

from typing import Any

from modules.options import Options
from modules.progress import JobState

_runtime: Any = None
_fallback_opts = Options()
_fallback_state = JobState()


def bind(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


def __getattr__(name: str) -> Any:
    rt = _runtime
    if name == "opts":
        return rt.opts if rt else _fallback_opts
    if name == "state":
        return rt.state if rt else _fallback_state
    if name == "cmd_opts":
        return rt.args if rt else None
    if name == "sd_model":
        return rt.models.current if rt else None
    if name == "device":
        return rt.device if rt else "cpu"
    if name == "sd_upscalers":
        if rt:
            return rt.upscalers.list()
        from modules.upscalers import UpscalerRegistry

        return UpscalerRegistry({}).list()
    if name == "runtime":
        return rt
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
