"""Gradio 3 idioms of A1111's era (A1111 pins gradio 3.41) under Gradio 6, translated in one place.

``install()`` (when extensions load) teaches Gradio 6 what extensions written for Gradio 3 say:

- ``gr.<Component>.update(**props)`` -> ``gr.update(**props)``;
- event listeners' ``_js=`` -> ``js=`` (``.click``, ``.change``, ``.then``, ``demo.load`` ...);
- ``component.style(...)``: ``height``/``width``, ``container``, ``grid``/``columns`` (Gallery), ``preview``,
  ``object_fit``, ``equal_height`` (Row), ``full_width`` (Button: fills the row); others (``rounded``, ``margin``,
  ``border``) are looks Gradio 6 has no setting for and are dropped with a log line;
- constructor arguments Gradio 6 renamed: ``source=`` -> ``sources=[...]``, ``show_copy_button=True`` ->
  ``buttons=["copy"]``, ``tooltip=`` -> ``info=`` where the component has one; ``gr.Box`` -> ``gr.Group``;
- constructor arguments of Gradio 3 that have no Gradio 6 equivalent (``tool=``, ``brush_radius=``, ``shape=``, a
  Button's ``tooltip``, ...) are dropped with a warning in the log that names the component and the argument;
- a subclass of a Gradio component or layout defined outside Gradio (A1111's ``ToolButton``, ``FormRow``, an
  extension's ``class ARButton(ToolButton)`` with ``__init__(self, ar, **kwargs)``) sends the page the properties of
  the Gradio class it extends (label, value, elem_id, visible, ...): Gradio 6 reads them from the signature of the
  instance's own ``__init__``, which a ``**kwargs`` subclass hides, so its button had no text and no id.

Only arguments that Gradio 6 would reject are touched, and only names Gradio 6 lacks are added, so the app's own UI
(written for Gradio 6) behaves exactly as before. Any other unknown argument still raises Gradio's TypeError.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

# Gradio 3 constructor arguments with no Gradio 6 equivalent: dropped (with a warning).
_DROPPED = {"tool", "brush_radius", "brush_color", "mask_opacity", "shape", "tooltip", "max_rows",
            "overflow_row_behaviour", "show_edit_button", "show_share_button", "show_download_button",
            "source", "show_copy_button", "invert_colors", "streaming", "mirror_webcam", "include_audio",
            "height", "width"}
_STYLE_DROPPED = {"rounded", "margin", "border", "size", "mobile_collapse"}

_installed = False


def install() -> None:
    """Teach Gradio 6 the Gradio 3 idioms (idempotent)."""
    global _installed
    if _installed:
        return
    import gradio as gr
    from gradio.blocks import Block
    from gradio.events import Dependency

    if not hasattr(gr, "Box"):
        gr.Box = gr.Group
    for cls in _gradio_classes(gr, Block):
        if "update" not in dir(cls):
            cls.update = staticmethod(_update)
        if "style" not in dir(cls):
            cls.style = _style
        if "__init__" in vars(cls):
            cls.__init__ = _translating_init(cls, cls.__init__)
        for event in getattr(cls, "EVENTS", []):
            name = str(event)
            if name in vars(cls):
                setattr(cls, name, _translating_listener(vars(cls)[name]))
    for name in ("load", "unload"):
        setattr(gr.Blocks, name, _translating_listener(getattr(gr.Blocks, name)))
    Dependency.__init__ = _dependency_init(Dependency.__init__)
    Block.get_config = _config_of_gradio_base(Block.get_config)
    _installed = True


def _gradio_classes(gr: Any, base: type) -> list[type]:
    found = {value for value in vars(gr).values() if isinstance(value, type) and issubclass(value, base)}
    for layout in ("layouts",):
        module = getattr(gr, layout, None)
        found |= {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, base)} if module else set()
    return sorted(found, key=lambda c: c.__qualname__)


def _update(**kwargs: Any) -> dict[str, Any]:
    """``gr.X.update(...)`` of Gradio 3: a generic update."""
    import gradio as gr

    return gr.update(**kwargs)


# -- constructors ------------------------------------------------------------------------------------------------------
def _translating_init(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    if getattr(init, "_gradio3", False):
        return init
    accepted = set(inspect.signature(init).parameters)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        unknown = set(kwargs) - accepted
        if unknown:
            kwargs = translate_kwargs(cls.__name__, accepted, kwargs)
        init(self, *args, **kwargs)

    __init__._gradio3 = True  # type: ignore[attr-defined]
    return __init__


def translate_kwargs(component: str, accepted: set[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 constructor arguments of ``component`` as Gradio 6 takes them (only those it does not accept)."""
    kwargs = dict(kwargs)
    if "source" in kwargs and "source" not in accepted and "sources" in accepted:
        source = kwargs.pop("source")
        kwargs["sources"] = [s for s in ([source] if isinstance(source, str) else list(source or []))
                             if s in ("upload", "webcam", "clipboard", "microphone")] or ["upload"]
    if "show_copy_button" in kwargs and "show_copy_button" not in accepted and "buttons" in accepted:
        if kwargs.pop("show_copy_button"):
            kwargs["buttons"] = [*(kwargs.get("buttons") or []), "copy"]
    if "tooltip" in kwargs and "tooltip" not in accepted and "info" in accepted and not kwargs.get("info"):
        kwargs["info"] = kwargs.pop("tooltip")
    for name in [k for k in kwargs if k not in accepted and k in _DROPPED]:
        value = kwargs.pop(name)
        log.warning("Gradio 3 argument %s=%r of gr.%s has no Gradio 6 equivalent and is ignored", name, value,
                    component)
    return kwargs


# -- .style() -------------------------------------------------------------------------------------------------------------
def _style(self: Any, **kwargs: Any) -> Any:
    """Gradio 3's ``component.style(...)``: set the Gradio 6 property each look corresponds to."""
    mapping = {"height": "height", "width": "width", "container": "container", "preview": "preview",
               "object_fit": "object_fit", "equal_height": "equal_height", "columns": "columns", "grid": "columns",
               "rows": "rows", "show_label": "show_label"}
    for key, value in kwargs.items():
        if key == "full_width":
            if value:
                self.scale = self.scale or 1
            continue
        target = mapping.get(key)
        if key == "grid" and isinstance(value, (list, tuple)):
            value = value[-1]
        if target is not None and hasattr(self, target):
            setattr(self, target, value)
        elif key in _STYLE_DROPPED or target is not None:
            log.warning("Gradio 3 style %s=%r of %s has no Gradio 6 equivalent and is ignored", key, value,
                        type(self).__name__)
        else:
            raise TypeError(f"{type(self).__name__}.style() got an unexpected keyword argument {key!r}")
    return self


# -- subclasses defined outside Gradio ---------------------------------------------------------------------------------
def _config_of_gradio_base(get_config: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    if getattr(get_config, "_gradio3", False):
        return get_config

    @functools.wraps(get_config)
    def config(self: Any, cls: type | None = None) -> dict[str, Any]:
        own = type(self)
        if cls is not None or own.__module__.split(".")[0] == "gradio":
            return get_config(self, cls)
        base = next((k for k in own.__mro__ if k.__module__.split(".")[0] == "gradio"), None)
        if base is None:
            return get_config(self, cls)
        return {**get_config(self, own), **get_config(self, base)}

    config._gradio3 = True  # type: ignore[attr-defined]
    return config


# -- event listeners ----------------------------------------------------------------------------------------------------
def _translating_listener(listener: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(listener, "_gradio3", False):
        return listener

    @functools.wraps(listener)
    def translated(*args: Any, **kwargs: Any) -> Any:
        if "_js" in kwargs:
            js = kwargs.pop("_js")
            kwargs.setdefault("js", js)
        return listener(*args, **kwargs)

    translated._gradio3 = True  # type: ignore[attr-defined]
    return translated


def _dependency_init(init: Callable[..., None]) -> Callable[..., None]:
    if getattr(init, "_gradio3", False):
        return init

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in ("then", "success", "failure"):
            if callable(getattr(self, name, None)):
                setattr(self, name, _translating_listener(getattr(self, name)))

    __init__._gradio3 = True  # type: ignore[attr-defined]
    return __init__
