"""A1111's ``modules.shared`` as a thin facade for extensions: ``opts``, ``state``, ``cmd_opts``, ``sd_model``, ...

The app itself passes a ``Runtime`` explicitly; this module only mirrors the one that is running so that code written
for A1111 (``from modules import shared; shared.opts.CLIP_stop_at_last_layers``) keeps working. ``opts`` and
``state`` are stable objects that always read the running app's settings and job (``modules.a1111.options`` /
``modules.a1111.state``); A1111's other names come from ``modules.a1111.shared_names``.
"""
from __future__ import annotations

from typing import Any

from modules.a1111.options import OptionsFacade
from modules.a1111.state import StateProxy
from modules.options import Options
from modules.progress import JobState

_runtime: Any = None
_fallback_opts = Options()
_fallback_state = JobState()
_cmd_opts: tuple[Any, Any] = (None, None)     # (runtime it was built for, CmdOpts)

demo: Any = None                              # the page's gr.Blocks once it is built (A1111's shared.demo)


def bind(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


opts = OptionsFacade(lambda: _runtime.opts if _runtime else _fallback_opts)
state = StateProxy(lambda: _runtime.state if _runtime else _fallback_state)


def _cmd_opts_now() -> Any:
    global _cmd_opts
    if _cmd_opts[0] is not _runtime or _cmd_opts[1] is None:
        from modules.a1111.shared_names import build_cmd_opts
        from modules.paths import Paths

        if _runtime is not None:
            built = build_cmd_opts(_runtime.args, _runtime.paths)
        else:
            from modules.cmd_args import parse_args

            built = build_cmd_opts(parse_args([]), Paths.from_args())
        _cmd_opts = (_runtime, built)
    return _cmd_opts[1]


def __getattr__(name: str) -> Any:
    rt = _runtime
    if name == "cmd_opts":
        return _cmd_opts_now()
    if name == "sd_model":
        return rt.models.current if rt else None
    if name == "device":
        return rt.device if rt else "cpu"
    if name == "runtime":
        return rt
    if name == "prompt_styles":
        return rt.prompt_styles if rt else None
    from modules.a1111 import shared_names

    return shared_names.lookup(name)
