"""A1111's settings API for extensions: ``OptionInfo``, ``OptionHTML``, ``options_section`` and ``shared.opts``.

The app's own settings are the ``modules.options.Options`` model. An extension adds its own with
``shared.opts.add_option(key, OptionInfo(default, label, component, component_args, section=...))``; such an option
is kept in ``registered`` (the keys the app knows besides its own fields: ``known_keys()``), its value lives in the
same ``config.json`` (as one of the model's extra keys, saved and loaded with the others), it is shown in the
Settings tab (``settings_components``) and ``shared.opts.<key>`` reads its saved value, else its default.

``shared.opts`` is one stable ``OptionsFacade`` that always reads the running app's ``Options``.
"""
from __future__ import annotations

import html
import logging
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator

from modules.a1111.missing import attribute_error
from modules.options import Options

log = logging.getLogger(__name__)


class OptionInfo:
    """One setting as A1111 describes it. The chained helpers add text shown beside it and return the option."""

    def __init__(self, default: Any = None, label: str = "", component: Any = None,
                 component_args: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 onchange: Callable[[], None] | None = None, section: tuple[str, str] | None = None,
                 refresh: Callable[[], None] | None = None, comment_before: str = "", comment_after: str = "",
                 infotext: str | None = None, restrict_api: bool = False, category_id: str | None = None) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{html.escape(url)}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> "OptionInfo":
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, text: str) -> "OptionInfo":
        self.comment_after += text
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self

    def component_kwargs(self) -> dict[str, Any]:
        args = self.component_args() if callable(self.component_args) else self.component_args
        return dict(args or {})


class OptionHTML(OptionInfo):
    """A piece of text among the settings (not a value: never saved)."""

    def __init__(self, text: str) -> None:
        import gradio as gr

        text = str(text).strip()
        super().__init__(text, label="", component=lambda **kwargs: gr.HTML(text, elem_classes="settings-info", **kwargs))
        self.do_not_save = True


def options_section(section_identifier: tuple[str, ...], options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """Put every option of ``options_dict`` in ``section_identifier`` ``(id, title[, category])``."""
    for info in options_dict.values():
        if len(section_identifier) == 2:
            info.section = section_identifier
        elif len(section_identifier) == 3:
            info.section, info.category_id = section_identifier[:2], section_identifier[2]
    return options_dict


# Options added by extensions in this run, by key (the keys config.json may hold besides the model's fields).
registered: dict[str, OptionInfo] = {}
_onchange: dict[str, Callable[[], None]] = {}

# A1111 settings the app has no setting for, read by A1111's own scripts; reading gives A1111's default.
A1111_DEFAULTS: dict[str, Any] = {
    "hide_samplers": [],
    "img_max_size_mp": 200,
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "set_scale_by_when_changing_upscaler": False,
    "upscaling_max_images_in_cache": 5,
    "disable_all_extensions": "none",
}


def known_keys() -> set[str]:
    """Every key the settings know: the app's own and the ones extensions registered."""
    return set(Options.model_fields) | set(registered)


def forget_registered() -> None:
    registered.clear()
    _onchange.clear()


class _Data(MutableMapping):
    """``opts.data``: every value by key; writing stores it (A1111 extensions edit this dict directly)."""

    def __init__(self, facade: "OptionsFacade") -> None:
        self._facade = facade

    def _keys(self) -> list[str]:
        opts = self._facade.current()
        return list(dict.fromkeys([*type(opts).model_fields, *(opts.model_extra or {}), *registered]))

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return self._facade._value(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._facade._store(key, value)

    def __delitem__(self, key: str) -> None:
        (self._facade.current().model_extra or {}).pop(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class OptionsFacade:
    """``shared.opts``: A1111's ``Options`` API over the running app's ``Options`` (its own fields and extensions')."""

    def __init__(self, resolve: Callable[[], Options]) -> None:
        object.__setattr__(self, "_resolve", resolve)

    def current(self) -> Options:
        return self._resolve()

    # -- values ------------------------------------------------------------------------------------------------------
    def _value(self, key: str) -> Any:
        opts = self.current()
        if key in type(opts).model_fields:
            return getattr(opts, key)
        extra = opts.model_extra or {}
        if key in extra:
            return extra[key]
        if key in registered:
            return registered[key].default
        if key in A1111_DEFAULTS:
            return A1111_DEFAULTS[key]
        from modules.a1111 import settings_catalog

        if key in settings_catalog.FIXED:            # an A1111 setting whose value is fixed in this web UI
            return settings_catalog.FIXED[key][0]
        raise attribute_error("modules.shared.opts", key)

    def _store(self, key: str, value: Any) -> None:
        opts = self.current()
        if key in type(opts).model_fields:
            opts.set(key, value)
        else:
            opts.__pydantic_extra__[key] = value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._value(key)
        except AttributeError:
            pass
        if register_extension_settings():          # options an extension adds in on_ui_settings
            return self._value(key)
        method = getattr(self.current(), key, None)   # Options' own methods (model_dump, ...)
        if method is None:
            raise attribute_error("modules.shared.opts", key)
        return method

    def __setattr__(self, key: str, value: Any) -> None:
        self._store(key, value)

    @property
    def data(self) -> _Data:
        return _Data(self)

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        labels = {name: OptionInfo(field.get_default(call_default_factory=True), field.description or name)
                  for name, field in Options.model_fields.items()}
        return {**labels, **registered}

    # -- A1111's methods ---------------------------------------------------------------------------------------------
    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register an extension's option; its value is the saved one, else ``info.default``."""
        if key in Options.model_fields:
            log.warning("An extension registered option %r, which is one of the app's own settings; ignored", key)
            return
        registered[key] = info
        Options.extra_known_keys.add(key)     # a known key from now on: listed by GET /options, settable by POST
        extra = self.current().__pydantic_extra__
        if key not in extra and not info.do_not_save:
            extra[key] = info.default

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set an option; returns whether it changed. Calls its ``onchange`` when it did."""
        old = self._value(key)
        if old == value:
            return False
        if key in registered:
            if registered[key].do_not_save:
                return False
            self._store(key, value)
        else:
            self.current().set(key, value)    # validates; ValueError for an unknown key
        callback = registered[key].onchange if key in registered else _onchange.get(key)
        if run_callbacks and callback is not None:
            try:
                callback()
            except Exception:
                self._store(key, old)
                raise
        return True

    def get_default(self, key: str) -> Any:
        if key in registered:
            return registered[key].default
        return self.current().get_default(key)

    def onchange(self, key: str, func: Callable[[], None], call: bool = True) -> None:
        if key in registered:
            registered[key].onchange = func
        else:
            _onchange[key] = func
        if call:
            func()

    def save(self, filename: Any = None) -> None:
        from pathlib import Path

        self.current().save(Path(filename) if filename else None)

    def dumpjson(self) -> str:
        import json

        return json.dumps(dict(self.data))

    def same_type(self, x: Any, y: Any) -> bool:
        if x is None or y is None:
            return True
        return type(x) is type(y) or (isinstance(x, (int, float)) and isinstance(y, (int, float)))


# -- on_ui_settings ----------------------------------------------------------------------------------------------------
_settings_registered_for: object | None = None


def register_extension_settings(force: bool = False) -> bool:
    """Run the extensions' ``on_ui_settings`` callbacks (they call ``add_option``) once for the loaded scripts, so
    their options exist without a page (API-only); ``force``: again (the Settings tab is being built). Returns
    whether they ran now."""
    global _settings_registered_for
    from modules import script_callbacks, scripts

    loaded = scripts.scripts_txt2img
    if not force and (loaded is None or _settings_registered_for is loaded):
        return False
    _settings_registered_for = loaded
    script_callbacks.ui_settings_callback()
    return True


# -- the Settings tab --------------------------------------------------------------------------------------------------
def settings_components(facade: OptionsFacade) -> dict[str, Any]:
    """Gradio components for the extensions' options, grouped by section (call inside the Settings tab's layout).
    Returns ``{key: component}`` for the ones whose values are saved."""
    import gradio as gr

    by_section: dict[tuple[str, str], list[str]] = {}
    for key, info in registered.items():
        by_section.setdefault(tuple(info.section or ("extensions", "Extensions")), []).append(key)
    components: dict[str, Any] = {}
    for (section_id, title), keys in by_section.items():
        with gr.Accordion(title, open=True, elem_id=f"settings_{section_id}", elem_classes="settings-section"):
            for key in keys:
                info = registered[key]
                if info.comment_before:
                    gr.HTML(info.comment_before, elem_classes="settings-comment")
                component = _component(key, info, facade)
                if info.comment_after:
                    gr.HTML(info.comment_after, elem_classes="settings-comment")
                if not info.do_not_save:
                    components[key] = component
    return components


def _component(key: str, info: OptionInfo, facade: OptionsFacade) -> Any:
    import gradio as gr

    kwargs = info.component_kwargs()
    elem_id = f"setting_{key}"
    if isinstance(info, OptionHTML):
        return info.component(elem_id=elem_id)
    value = facade._value(key)
    factory = info.component
    if factory is None:
        if isinstance(value, bool):
            factory = gr.Checkbox
        elif isinstance(value, (int, float)):
            factory = gr.Number
        else:
            factory = gr.Textbox
            value = "" if value is None else str(value)
    return factory(label=info.label or key, value=value, elem_id=elem_id, **kwargs)
