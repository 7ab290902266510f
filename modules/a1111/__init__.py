"""A1111's module surface for extensions, kept in one place.

Extensions written for AUTOMATIC1111's web UI import A1111's modules by name (``modules.devices``,
``modules.ui_components``, ``launch``, ...) and read A1111's names on the app's own modules (``modules.paths.models_path``,
``modules.sd_models.checkpoints_list``). ``install()`` (called once before extensions' scripts load) makes those names
resolve, with real behaviour behind each:

- ``MODULES``: A1111 modules the app does not have, each a small module of this package registered in ``sys.modules``
  under A1111's name (and as an attribute of the ``modules`` package, so ``from modules import devices`` works). A
  module file the app has under that name (e.g. a later ``modules/upscaler.py``) wins.
- ``ADDONS``: app modules that have A1111's name but not every A1111 attribute. Each gets a module ``__getattr__``
  (PEP 562) that looks a missing name up in this package's ``addons`` module for it; the app's modules themselves stay
  as they are. A module that already has a ``__getattr__`` keeps it and falls back to the addon.
- Anything still missing raises an error that names the A1111 name (``missing``), so an extension's failure report
  says exactly what this web UI does not provide.
- Gradio 3 idioms in extensions' UI code are translated to Gradio 6 by ``gradio3.install()``.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Callable

from modules.a1111 import missing

# A1111 module name -> module of this package that provides it.
MODULES: dict[str, str] = {
    "modules.ui_components": "modules.a1111.ui_components",
    "modules.devices": "modules.a1111.devices",
    "modules.errors": "modules.a1111.errors",
    "modules.sd_samplers_common": "modules.a1111.sd_samplers_common",
    "modules.sd_schedulers": "modules.a1111.sd_schedulers",
    "modules.paths_internal": "modules.a1111.paths_internal",
    "modules.launch_utils": "modules.a1111.launch_utils",
    "modules.shared_items": "modules.a1111.shared_items",
    "modules.infotext_utils": "modules.a1111.infotext_utils",
    "modules.generation_parameters_copypaste": "modules.a1111.infotext_utils",
    "modules.call_queue": "modules.a1111.call_queue",
    "modules.sd_hijack": "modules.a1111.sd_hijack",
    "modules.ui_common": "modules.a1111.ui_common",
    "modules.cache": "modules.a1111.cache",
    "modules.hashes": "modules.a1111.hashes",
    "modules.upscaler": "modules.a1111.upscaler",   # A1111's classes on the registry of modules/upscalers.py
    "modules.deepbooru": "modules.a1111.deepbooru",
    "modules.safe": "modules.a1111.safe",
    "launch": "modules.a1111.launch",
}

# App module with A1111's name -> module of this package with its missing A1111 names.
ADDONS: dict[str, str] = {
    "modules.paths": "modules.a1111.addons.paths",
    "modules.sd_models": "modules.a1111.addons.sd_models",
    "modules.sd_samplers": "modules.a1111.addons.sd_samplers",
    "modules.sd_vae": "modules.a1111.addons.sd_vae",
    "modules.ui": "modules.a1111.addons.ui",
    "modules.extensions": "modules.a1111.addons.extensions",
    "modules.processing": "modules.a1111.addons.processing",
    "modules.cmd_args": "modules.a1111.addons.cmd_args",
    # owned by their modules; only the clear missing-name error is added here
    "modules.images": None,
    "modules.scripts": None,
    "modules.script_callbacks": None,
}

_installed = False


def install() -> None:
    """Register A1111's module names (idempotent). Call before extensions' scripts are imported."""
    global _installed
    if _installed:
        return
    from modules.a1111 import gradio3

    for name, target in MODULES.items():
        if not _app_has(name):
            _register(name, importlib.import_module(target))
    for name, addon in ADDONS.items():
        _add_names(importlib.import_module(name), addon)
    missing.install_finder()
    missing.install_package_getattr(importlib.import_module("modules"))
    gradio3.install()
    _installed = True


def _app_has(name: str) -> bool:
    """Whether the app itself has a module file called ``name`` (it then wins over this package's stand-in)."""
    parent, _, child = name.rpartition(".")
    search = importlib.import_module(parent).__path__ if parent else None
    return importlib.machinery.PathFinder.find_spec(child, search) is not None


def _register(name: str, module: ModuleType) -> None:
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(importlib.import_module(parent), child, module)


def _add_names(module: ModuleType, addon: str | None) -> None:
    """Give ``module`` a ``__getattr__`` that serves A1111 names from ``addon`` and names what is missing."""
    own: Callable[[str], Any] | None = module.__dict__.get("__getattr__")
    if getattr(own, "_a1111_addon", False):
        return

    def __getattr__(name: str) -> Any:
        if own is not None:
            try:
                return own(name)
            except AttributeError:
                pass
        if addon is not None and not name.startswith("_"):
            try:
                return getattr(importlib.import_module(addon), name)
            except AttributeError:
                pass
        raise missing.attribute_error(module.__name__, name)

    __getattr__._a1111_addon = True  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__  # type: ignore[method-assign]
