"""A1111's component hooks: ``before_component`` / ``after_component`` for every Gradio component of the page.

Extensions use them to find the app's components by ``elem_id`` (``txt2img_prompt``, ``txt2img_generate``,
``img2img_gallery`` ...) and wire their own events to them, or to add their own components right before or after one.

While the page is built (``page_build``, around ``ui.create_ui``), creating any Gradio component (a
``gradio.components.Component``, A1111's ``IOComponent``; not layout blocks) calls, in A1111's order:

1. inside the txt2img / img2img tab, that tab's ``ScriptRunner.before_component``: the scripts'
   ``on_before_component(callback, elem_id=...)`` callbacks for this elem_id, then every script's
   ``before_component(component, **kwargs)``;
2. ``script_callbacks.on_before_component`` callbacks ``(component, **kwargs)``;
3. the component is created (a component made in steps 1-2 lands right before it in the layout);
4. ``script_callbacks.on_after_component`` callbacks, then the tab runner's ``after_component`` (elem_id callbacks,
   then every script's ``after_component``).

``kwargs`` are the constructor's arguments by name, defaults included (A1111's ``IOComponent.__init__`` received them
so), so ``kwargs.get("elem_id")`` / ``kwargs["label"]`` work. In ``before_component`` the component is not built yet.
The hook is one class-level ``__call__`` on Gradio's component metaclass, so components of classes defined later (an
extension's ``gr.Button`` subclass) are covered too; outside a page build it does nothing. A hook that raises is
contained like every extension callback (reported with its extension's name, which is switched off) and the page is
built without it.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

MAX_DEPTH = 8
"""Components created by hooks of components created by hooks ... deeper than this get no hooks (a runaway guard)."""

_building_thread: int | None = None
_depth = 0
_installed = False
_signatures: dict[type, inspect.Signature | None] = {}

F = TypeVar("F", bound=Callable[..., Any])


def install() -> None:
    """Put the hook on Gradio's component metaclass (idempotent)."""
    global _installed
    if _installed:
        return
    from gradio.component_meta import ComponentMeta
    from gradio.components import Component

    original = ComponentMeta.__call__

    def __call__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if (_building_thread != threading.get_ident() or _depth >= MAX_DEPTH or not issubclass(cls, Component)
                or cls.__new__ is not object.__new__):
            return original(cls, *args, **kwargs)
        return _create_with_hooks(cls, original, args, kwargs)

    ComponentMeta.__call__ = __call__  # type: ignore[method-assign]
    _installed = True


def page_build(fn: F) -> F:
    """Decorator for the function that builds the page: component hooks fire while it runs (on its thread)."""
    @functools.wraps(fn)
    def building(*args: Any, **kwargs: Any) -> Any:
        global _building_thread
        install()
        outer = _building_thread
        _building_thread = threading.get_ident()
        try:
            return fn(*args, **kwargs)
        finally:
            _building_thread = outer

    return building  # type: ignore[return-value]


def _create_with_hooks(cls: type, create: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    global _depth
    from modules import script_callbacks

    named = _named_arguments(cls, args, kwargs)
    runner = _current_runner()
    component = cls.__new__(cls)
    _depth += 1
    try:
        if runner is not None:
            runner.before_component(component, **named)
        script_callbacks.before_component_callback(component, **named)
        component.__init__(*args, **kwargs)
        script_callbacks.after_component_callback(component, **named)
        if runner is not None:
            runner.after_component(component, **named)
    finally:
        _depth -= 1
    return component


def _named_arguments(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor's arguments by name with its defaults (what A1111's hooks get as ``**kwargs``)."""
    if cls not in _signatures:
        try:
            _signatures[cls] = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            _signatures[cls] = None
    signature = _signatures[cls]
    if signature is None:
        return dict(kwargs)
    try:
        bound = signature.bind_partial(None, *args, **kwargs)
    except TypeError:
        return dict(kwargs)   # the constructor itself will say what is wrong
    bound.apply_defaults()
    named: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    return named


TAB_RUNNERS = {"txt2img": "txt2img", "tab_txt2img": "txt2img", "img2img": "img2img", "tab_img2img": "img2img"}


def _current_runner() -> Any:
    """The ScriptRunner of the txt2img / img2img tab being built (A1111's ``scripts.scripts_current``), or None."""
    from gradio.context import get_render_context
    from gradio.layouts import Tab

    from modules import scripts

    block = get_render_context()
    while block is not None:
        if isinstance(block, Tab):
            tab = TAB_RUNNERS.get(str(getattr(block, "id", None))) or TAB_RUNNERS.get(str(block.elem_id))
            return scripts.runner_for(tab) if tab else None
        block = getattr(block, "parent", None)
    return None
