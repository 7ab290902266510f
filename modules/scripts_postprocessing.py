"""Extras-tab (postprocessing) scripts, with A1111's contract: subclass ``ScriptPostprocessing`` in a ``.py`` file of
``modules/builtin_scripts/`` or of an extension's ``scripts/`` folder.

- ``name`` names it (the key of its args in the extras API), ``order`` sorts the scripts (lower runs first).
- ``ui()`` returns a dict ``{arg name: Gradio component}``; the components' values become keyword args.
- ``process_firstpass(pp, **args)`` runs for every script before any ``process``: it may announce the size the
  picture will get (``pp.shared.target_width`` / ``target_height``).
- ``process(pp, **args)`` changes ``pp.image`` (and may add ``pp.info`` entries for the infotext, or
  ``pp.extra_images``); ``postprocess(images)`` is called once after all pictures of a run.
- ``image_changed()`` is called when the user picks another picture.

A script with the same ``name`` as one loaded before it replaces that one (an extension's "Upscale" replaces the
built-in one, as the file it comes from is A1111's own). A script that raises in ``ui()`` is switched off and
reported (``modules.extensions``); one that raises while processing stops the run with an error naming it.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from PIL import Image

from modules import extensions
from modules.upscalers import UpscalerError

log = logging.getLogger(__name__)


class PostprocessingError(RuntimeError):
    """A postprocessing script failed; the message names it."""


@dataclass
class PostprocessedImageSharedInfo:
    target_width: int | None = None
    target_height: int | None = None


class PostprocessedImage:
    """One picture going through the scripts (A1111's ``PostprocessedImage``)."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.info: dict[str, Any] = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list[Image.Image] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes: dict[str, int] | None = None) -> str:
        """``-tag1-tag2`` from ``nametags`` (numbered when already used), for the saved file's name."""
        used_suffixes = {} if used_suffixes is None else used_suffixes
        suffix = "-".join(self.nametags)
        if suffix:
            suffix = "-" + suffix
        if suffix not in used_suffixes:
            used_suffixes[suffix] = 1
            return suffix
        used_suffixes[suffix] += 1
        return f"{suffix}-{used_suffixes[suffix]}"

    def create_copy(self, new_image: Image.Image, *, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> PostprocessedImage:
        pp = PostprocessedImage(new_image)
        pp.info, pp.shared = dict(self.info), self.shared
        pp.nametags = [*self.nametags, *(nametags or [])]
        pp.disable_processing = disable_processing
        return pp


class ScriptPostprocessing:
    """Base class of Extras-tab scripts; override what you need."""

    filename: str | None = None
    source: extensions.ScriptFile | None = None
    controls: dict[str, Any] | None = None
    args_from: int | None = None
    args_to: int | None = None
    order = 1000
    name: str | None = None
    group: Any = None

    def ui(self) -> dict[str, Any]:
        return {}

    def process_firstpass(self, pp: PostprocessedImage, **args: Any) -> None:
        pass

    def process(self, pp: PostprocessedImage, **args: Any) -> None:
        pass

    def postprocess(self, filenames: list[str]) -> None:
        pass

    def image_changed(self) -> None:
        pass


class ScriptPostprocessingRunner:
    """The loaded postprocessing scripts in order, their UI and arg layout, and running them on one picture."""

    def __init__(self, scripts: Iterable[ScriptPostprocessing]) -> None:
        by_name: dict[str, ScriptPostprocessing] = {}
        for script in scripts:
            if script.source is None:
                script.source = extensions.builtin
            key = script.name or type(script).__name__
            if key in by_name:
                log.info("Postprocessing script %r from %s replaces the one from %s", key, script.filename,
                         by_name[key].filename)
            by_name[key] = script
        self.scripts = sorted(by_name.values(), key=lambda s: (s.order, s.name or ""))
        self.inputs: list[Any] = []
        self._lock = threading.Lock()

    def active(self) -> list[ScriptPostprocessing]:
        return [s for s in self.scripts if s.source.active]

    # -- UI and args ------------------------------------------------------------------------------------------------
    def setup_ui(self) -> list[Any]:
        """Build each script's controls (inside a ``gr.Blocks``); returns the components whose values, in order, are
        the run's args."""
        import gradio as gr

        inputs: list[Any] = []
        for script in self.scripts:
            script.args_from = script.args_to = len(inputs)
            script.controls = None
            if not script.source.active:
                continue
            try:
                with gr.Group():
                    controls = script.ui() or {}
            except Exception as e:  # noqa: BLE001 - contained: the script is switched off and reported
                script.source.fail(f"ui() of postprocessing script {script.name!r}", e)
                continue
            script.controls = dict(controls)
            inputs.extend(script.controls.values())
            script.args_to = len(inputs)
        self.inputs = inputs
        return inputs

    def _ensure_layout(self) -> None:
        with self._lock:
            if any(s.controls is not None for s in self.scripts) or not self.scripts:
                return
            import gradio as gr

            with gr.Blocks(analytics_enabled=False):
                self.setup_ui()

    def create_args_for_run(self, scripts_args: dict[str, dict[str, Any]]) -> list[Any]:
        """The flat arg list for ``run``: each script's control defaults, with the values named in
        ``scripts_args`` (``{script name: {arg name: value}}``) put in (A1111's layout, used by the extras API)."""
        from modules.scripts import _default_value

        self._ensure_layout()
        args: list[Any] = [None] * len(self.inputs)
        for script in self.scripts:
            if script.controls is None:
                continue
            given = scripts_args.get(script.name or "", {})
            for i, (key, component) in enumerate(script.controls.items()):
                args[script.args_from + i] = given[key] if key in given else _default_value(component)
        return args

    def script_args(self, script: ScriptPostprocessing, args: list[Any]) -> dict[str, Any]:
        if script.controls is None:
            return {}
        return dict(zip(script.controls, args[script.args_from:script.args_to]))

    # -- running ----------------------------------------------------------------------------------------------------
    def _call(self, script: ScriptPostprocessing, hook: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(script, hook)(*args, **kwargs)
        except UpscalerError:
            raise  # an upscaler that cannot be used: the message names it and why
        except Exception as e:
            raise PostprocessingError(f"postprocessing script {script.name!r} failed in {hook}(): "
                                      f"{type(e).__name__}: {e}") from e

    def run(self, pp: PostprocessedImage, args: list[Any]) -> None:
        """Every active script's ``process_firstpass``, then its ``process``, on ``pp`` (in order)."""
        self._ensure_layout()
        scripts = [s for s in self.active() if s.controls is not None]
        for script in scripts:
            self._call(script, "process_firstpass", pp, **self.script_args(script, args))
        for script in scripts:
            if pp.disable_processing:
                break
            self._call(script, "process", pp, **self.script_args(script, args))

    def postprocess(self, filenames: list[str]) -> None:
        for script in self.active():
            self._call(script, "postprocess", filenames)

    def image_changed(self) -> None:
        for script in self.active():
            try:
                script.image_changed()
            except Exception as e:  # noqa: BLE001 - contained
                script.source.fail(f"image_changed() of postprocessing script {script.name!r}", e)
