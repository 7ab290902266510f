"""Custom scripts, with A1111's contract: subclass ``Script`` in a ``.py`` file of ``modules/builtin_scripts/`` or of
an extension's ``scripts/`` folder.

- ``title()`` names it (lower-cased, the name the API uses); ``show(is_img2img)`` returns False (not on this tab),
  True (selectable in the Script dropdown) or ``AlwaysVisible`` (always on, with its own accordion).
- ``ui(is_img2img)`` returns Gradio components; their values are the script's ``*args`` in every call below.
- A selected script's ``run(p, *args)`` does the job and returns a ``Processed`` (usually from ``process_images``
  calls on copies of ``p``); returning None means "generate normally".
- Always-on scripts get the lifecycle hooks while any job of their tab runs: ``setup(p, *args)``,
  ``before_process(p, *args)``, ``process(p, *args)`` (prompts and seeds are set up: change ``p.all_prompts`` ...),
  ``before_process_batch`` / ``process_batch`` / ``postprocess_batch(p, *args, batch_number=, prompts=, seeds=,
  subseeds=, images=)``, ``postprocess_image(p, pp: PostprocessImageArgs, *args)`` (replace ``pp.image``) and
  ``postprocess(p, processed, *args)``.

A ``ScriptRunner`` per tab is what ``p.scripts`` holds. Its arg vector ``p.script_args`` is A1111's layout:
``[selected script index (0 = None), *always-on scripts' args, *selectable scripts' args]``, each script owning
``script_args[script.args_from:script.args_to]``. Failures are contained: a script that raises (in ``ui``, a hook or
``run``) is logged with its name and file, switched off for the rest of the run (its whole extension, see
``modules.extensions``), reported in the job's ``Processed.comments``, and the job carries on. Only a
``processing.GenerationError`` (a script refusing its inputs, naming the parameter) stops the job.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable

from PIL import Image

from modules import a1111, extensions, script_callbacks
from modules.paths import REPO_ROOT
from modules.processing import GenerationError

if TYPE_CHECKING:
    from modules.processing import Processed, StableDiffusionProcessing

log = logging.getLogger(__name__)

class ScriptError(RuntimeError):
    """The selected script failed: the job fails with the script's name and its exception."""


AlwaysVisible = object()
"""``show()`` returns this for a script that is always on (no dropdown; its hooks run on every job)."""
INTERRUPT_GRACE = 2.0
"""Seconds a hook called after its job was interrupted may still run before it is abandoned."""


@dataclass
class PostprocessImageArgs:
    image: Image.Image


@dataclass
class PostSampleArgs:
    """``post_sample``: the batch's latents after sampling, before the VAE decode (replace ``samples``)."""
    samples: Any


@dataclass
class PostprocessBatchListArgs:
    """``postprocess_batch_list``: the decoded batch as a list of ``[3, H, W]`` tensors in 0..1; scripts may replace,
    add or remove entries (the job then has that many images)."""
    images: list[Any]


@dataclass
class PostProcessMaskOverlayArgs:
    """``postprocess_maskoverlay``: what image ``index`` of the batch is pasted over (replace either; None skips)."""
    index: int
    mask_for_overlay: Image.Image | None
    overlay_image: Image.Image | None


@dataclass
class MaskBlendArgs:
    """``on_mask_blend``: the inpainting blend of one sampling step (``denoiser`` None: the final blend).
    ``nmask`` is 1 where the picture is regenerated, ``mask`` where it is kept; replace ``blended_latent``."""
    current_latent: Any
    nmask: Any
    init_latent: Any
    mask: Any
    blended_latent: Any
    denoiser: Any = None
    sigma: Any = None

    @property
    def is_final_blend(self) -> bool:
        return self.denoiser is None


@dataclass
class OnComponent:
    """What ``Script.on_before_component`` / ``on_after_component`` callbacks get: the component of their elem_id."""
    component: Any


class Script:
    """Base class of custom scripts; override what you need. Attributes are A1111's."""

    name: str | None = None              # lower-cased title, set by the runner
    section: str | None = None
    filename: str | None = None
    source: extensions.ScriptFile | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson: bool = False
    is_txt2img: bool = False
    is_img2img: bool = False
    tabname: str | None = None
    controls: list[Any] | None = None
    infotext_fields: list[tuple[Any, Any]] | None = None    # (component, infotext key or fn(params) -> value)
    paste_field_names: list[str] | None = None
    on_before_component_elem_id: list[tuple[str, Callable[..., Any]]] | None = None   # (elem_id, callback)
    on_after_component_elem_id: list[tuple[str, Callable[..., Any]]] | None = None

    def title(self) -> str:
        raise NotImplementedError

    def show(self, is_img2img: bool) -> bool | object:
        return True

    def ui(self, is_img2img: bool) -> list[Any]:
        return []

    def run(self, p: StableDiffusionProcessing, *args: Any) -> Processed | None:
        return None

    def setup(self, p: StableDiffusionProcessing, *args: Any) -> None:
        pass

    def before_process(self, p: StableDiffusionProcessing, *args: Any) -> None:
        pass

    def process(self, p: StableDiffusionProcessing, *args: Any) -> None:
        pass

    def before_process_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        pass

    def process_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        pass

    def after_extra_networks_activate(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        """After the batch's extra networks are active (kwargs as ``process_batch`` plus ``extra_network_data``)."""

    def process_before_every_sampling(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        """Right before each sampling pass (twice with hires fix): kwargs ``x`` (start latents), ``noise``, ``c``,
        ``uc`` (conditioning); changes to ``p`` (steps, cfg_scale, sampler ...) or in-place changes of the tensors
        are what gets sampled."""

    def before_hr(self, p: StableDiffusionProcessing, *args: Any) -> None:
        """Before the hires-fix pass (``p.hr_*``, ``p.denoising_strength`` may still be changed)."""

    def post_sample(self, p: StableDiffusionProcessing, ps: PostSampleArgs, *args: Any) -> None:
        pass

    def on_mask_blend(self, p: StableDiffusionProcessing, mba: MaskBlendArgs, *args: Any) -> None:
        pass

    def postprocess_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        pass

    def postprocess_batch_list(self, p: StableDiffusionProcessing, pp: PostprocessBatchListArgs, *args: Any,
                               **kwargs: Any) -> None:
        pass

    def postprocess_image(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs, *args: Any) -> None:
        pass

    def postprocess_maskoverlay(self, p: StableDiffusionProcessing, ppmo: PostProcessMaskOverlayArgs,
                                *args: Any) -> None:
        pass

    def postprocess_image_after_composite(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs,
                                          *args: Any) -> None:
        pass

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed, *args: Any) -> None:
        pass

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Called before each component of this script's tab is created (``kwargs``: its arguments, ``elem_id`` ...);
        components created here land before it."""
        pass

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """Called after each component of this script's tab was created (find the app's ones by ``elem_id``)."""
        pass

    def on_before_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call ``callback(OnComponent(component))`` before the component ``elem_id`` of this tab is created."""
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call ``callback(OnComponent(component))`` after the component ``elem_id`` of this tab was created."""
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def elem_id(self, item_id: str) -> str:
        """``script_<tab>_<title>_<item_id>``; the tab part only when the script shows on both tabs the same way."""
        on_both = self.show(True) == self.show(False)
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if on_both else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


@dataclass
class ScriptClassData:
    script_class: type[Script]
    path: str
    basedir: str
    module: ModuleType


_current_basedir = str(REPO_ROOT)


def basedir() -> str:
    """The folder of the extension whose script is being loaded (the app's folder otherwise). Call it at import."""
    return _current_basedir


# ---------------------------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------------------------
class ScriptRunner:
    """The scripts of one tab, their UI and arg layout, and the hooks ``processing`` calls (``p.scripts``)."""

    def __init__(self, scripts: Iterable[Script], is_img2img: bool) -> None:
        self.is_img2img = is_img2img
        self.tabname = "img2img" if is_img2img else "txt2img"
        self.scripts: list[Script] = []
        self.titles: dict[Script, str] = {}
        self.hidden_titles: set[str] = set()     # lower-cased titles of the scripts that hid themselves on this tab
        for script in scripts:
            if script.source is None:
                script.source = extensions.script_file_for(Path(inspect.getfile(type(script))))
            script.is_img2img, script.is_txt2img, script.tabname = is_img2img, not is_img2img, self.tabname
            visible = self._call(script, "show", script.show, is_img2img)
            title = self._call(script, "title", script.title) if script.source.active else None
            if title is not None and not visible:
                self.hidden_titles.add(str(title).lower())
            elif title is not None:
                title = self._unique_title(str(title), script)
                script.name, script.alwayson = title.lower(), visible is AlwaysVisible
                self.titles[script] = title
                self.scripts.append(script)
        self.alwayson_scripts = [s for s in self.scripts if s.alwayson]
        self.selectable_scripts = [s for s in self.scripts if not s.alwayson]
        self.inputs: list[Any] = [None]
        self.infotext_fields: list[tuple[Any, Any]] = []
        self.paste_field_names: list[str] = []
        self._defaults: list[Any] | None = None
        self._layout_lock = threading.Lock()

    def _unique_title(self, title: str, script: Script) -> str:
        """``title``, or, when an earlier script of this tab has it (an extension's copy of a built-in script, such as
        A1111's own X/Y/Z plot), ``"<title> (<extension>)"``: each stays reachable by its own title, and the first
        one (the built-in) keeps the name API clients use."""
        taken = {t.lower() for t in self.titles.values()}
        candidate, n = title, 1
        while candidate.lower() in taken:
            n += 1
            suffix = script.source.extension.name if n == 2 else f"{script.source.extension.name} {n - 1}"
            candidate = f"{title} ({suffix})"
        return candidate

    # -- containment ------------------------------------------------------------------------------------------------
    def _call(self, script: Script, hook: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A hook, contained (``extensions.guarded``): a failure, ``sys.exit()`` or an overrun switches the script off
        and is reported; None is returned. ``run`` (a whole job) and ``ui`` (page building) are not timed."""
        state = getattr(args[0], "state", None) if args else None
        # A job interrupted before the hook began still finishes what it completed: the hook gets a short grace.
        grace_end = time.monotonic() + (INTERRUPT_GRACE if getattr(state, "interrupted", False) else 0.0)
        where = f"{hook}() of script {self.titles.get(script, type(script).__name__)!r}"
        _, result = extensions.guarded(
            script.source, where, fn, args, kwargs, timed=hook not in ("run", "ui"), passthrough=(GenerationError,),
            interrupted=None if state is None else lambda: state.interrupted and time.monotonic() >= grace_end)
        return result

    def _active(self, scripts: list[Script]) -> list[Script]:
        return [s for s in scripts if s.source.active]

    # -- component hooks (modules.a1111.component_hooks calls them while the tab is built) --------------------------
    def before_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hooks("before", component, kwargs)

    def after_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hooks("after", component, kwargs)

    def _component_hooks(self, when: str, component: Any, kwargs: dict[str, Any]) -> None:
        """A1111's order: the ``on_<when>_component(elem_id=)`` callbacks of this elem_id, then every script's
        ``<when>_component``. Run on the page builder's thread (they create components); failures are contained."""
        elem_id = kwargs.get("elem_id")
        hook = f"{when}_component"
        for script in self._active(self.scripts):
            for wanted, callback in list(getattr(script, f"on_{hook}_elem_id", None) or []):
                if wanted == elem_id and script.source.active:
                    extensions.guarded(script.source, f"on_{hook} callback of script {self.titles[script]!r} for "
                                       f"{elem_id!r}", callback, (OnComponent(component),), timed=False)
        for script in self._active(self.scripts):
            method = getattr(type(script), hook, None)
            if method is not getattr(Script, hook) and script.source.active:
                extensions.guarded(script.source, f"{hook}() of script {self.titles[script]!r}",
                                   getattr(script, hook), (component,), kwargs, timed=False)

    # -- UI and arg layout ------------------------------------------------------------------------------------------
    def setup_ui(self) -> list[Any]:
        """Build, inside a ``gr.Blocks``, an accordion per always-on script and the Script dropdown with each
        selectable script's controls (visible while it is selected). Returns the components whose values, in order,
        are ``p.script_args`` (the dropdown first, giving the selected index)."""
        import gradio as gr

        inputs: list[Any] = [None]
        self.infotext_fields, self.paste_field_names = [], []
        for script in self.alwayson_scripts:
            with gr.Accordion(self.titles[script], open=False, elem_id=script.elem_id("accordion")) as box:
                self._add_controls(script, inputs)
            box.visible = script.args_to > script.args_from
        dropdown = gr.Dropdown(["None", *(self.titles[s] for s in self.selectable_scripts)], value="None",
                               type="index", label="Script", elem_id=f"{self.tabname}_script_dropdown")
        groups = []
        for script in self.selectable_scripts:
            with gr.Group(visible=False) as group:
                self._add_controls(script, inputs)
            groups.append(group)
        inputs[0] = dropdown
        if groups:
            dropdown.change(lambda index: [gr.update(visible=index == i + 1) for i in range(len(groups))],
                            dropdown, groups, show_progress="hidden", queue=False)
        self.inputs = inputs
        self._defaults = [0, *(_default_value(c) for c in inputs[1:])]
        return inputs

    def _add_controls(self, script: Script, inputs: list[Any]) -> None:
        script.args_from = len(inputs)
        controls = self._call(script, "ui", script.ui, self.is_img2img) if script.source.active else None
        if controls is not None and not isinstance(controls, (list, tuple)):
            script.source.fail(f"ui() of script {self.titles[script]!r}",
                               TypeError(f"ui() must return a list of components, got {type(controls).__name__}"))
            controls = None
        script.controls = list(controls or [])
        inputs.extend(script.controls)
        script.args_to = len(inputs)
        self.infotext_fields.extend(script.infotext_fields or [])
        self.paste_field_names.extend(script.paste_field_names or [])

    def _ensure_layout(self) -> None:
        """Lay out the args without a page (API, jobs before the UI is built): ``ui()`` in a throwaway Blocks. Do not
        let this happen inside a page being built (it would land in it): call ``setup_ui`` there first."""
        if self._defaults is not None:
            return
        import gradio as gr

        with self._layout_lock:
            if self._defaults is None:
                with gr.Blocks():
                    self.setup_ui()

    def default_args(self) -> list[Any]:
        """The arg vector with every control at its default and no script selected."""
        self._ensure_layout()
        return list(self._defaults)

    def _args(self, script: Script, p: StableDiffusionProcessing) -> list[Any]:
        """The script's slice of ``p.script_args``, missing trailing values taken from the defaults."""
        self._ensure_layout()
        values = list(p.script_args[script.args_from:script.args_to])
        return values + self._defaults[script.args_from + len(values):script.args_to]

    # -- running ----------------------------------------------------------------------------------------------------
    def run(self, p: StableDiffusionProcessing, *args: Any) -> Processed:
        """Run a job: the selected script's ``run`` (``args[0]`` or ``p.script_args[0]``), or ``process_images``.
        Failures of scripts during the job are listed in the returned ``Processed.comments``."""
        from modules.processing import _fill_runtime_defaults, process_images

        self._ensure_layout()
        _fill_runtime_defaults(p)
        p.scripts = self
        given = list(args) if args else list(p.script_args)
        p.script_args = given + self._defaults[len(given):]
        first_failure = len(extensions.failures)
        notes: list[str] = []
        self.setup(p)
        processed = None
        script = self._selected(p.script_args[0], notes)
        if script is not None:
            processed = self._run_selected(script, p)
        if processed is None:
            processed = process_images(p)
        notes.extend(f.message for f in extensions.failures[first_failure:])
        if notes:
            processed.comments = "\n".join([processed.comments, *notes] if processed.comments else notes)
        return processed

    def _run_selected(self, script: Script, p: StableDiffusionProcessing) -> Processed | None:
        """The selected script's ``run``. Unlike an always-on hook, its failure ends the job: the user asked for
        what it does, and an image made without it would pass for its result (A1111 answers with an error)."""
        try:
            return script.run(p, *self._args(script, p))
        except GenerationError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised as the job's error, naming the script
            log.error("Script %r (%s) failed", self.titles[script], script.filename, exc_info=e)
            raise ScriptError(f"Script {self.titles[script]!r} failed: {type(e).__name__}: {e}") from e

    def _selected(self, index: Any, notes: list[str]) -> Script | None:
        if not index:
            return None
        if not isinstance(index, int) or not 0 < index <= len(self.selectable_scripts):
            raise GenerationError(f"script_args[0]: no selectable script number {index!r}")
        script = self.selectable_scripts[index - 1]
        if not script.source.active:
            notes.append(f"Script {self.titles[script]!r} is disabled; generated without it.")
            return None
        return script

    def setup(self, p: StableDiffusionProcessing) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "setup", script.setup, p, *self._args(script, p))

    def before_process(self, p: StableDiffusionProcessing) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "before_process", script.before_process, p, *self._args(script, p))

    def process(self, p: StableDiffusionProcessing) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "process", script.process, p, *self._args(script, p))

    def before_process_batch(self, p: StableDiffusionProcessing, **kwargs: Any) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "before_process_batch", script.before_process_batch, p, *self._args(script, p),
                       **kwargs)

    def process_batch(self, p: StableDiffusionProcessing, **kwargs: Any) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "process_batch", script.process_batch, p, *self._args(script, p), **kwargs)

    def after_extra_networks_activate(self, p: StableDiffusionProcessing, **kwargs: Any) -> None:
        self._each(p, "after_extra_networks_activate", **kwargs)

    def process_before_every_sampling(self, p: StableDiffusionProcessing, **kwargs: Any) -> None:
        self._each(p, "process_before_every_sampling", **kwargs)

    def before_hr(self, p: StableDiffusionProcessing) -> None:
        self._each(p, "before_hr")

    def post_sample(self, p: StableDiffusionProcessing, samples: Any) -> Any:
        """The latents to decode, as the scripts left ``PostSampleArgs.samples``."""
        ps = PostSampleArgs(samples)
        self._each(p, "post_sample", ps)
        return ps.samples

    def on_mask_blend(self, p: StableDiffusionProcessing, current_latent: Any, nmask: Any, init_latent: Any,
                      blended_latent: Any, denoiser: Any, sigma: Any) -> Any:
        """The blended latents, as the scripts left ``MaskBlendArgs.blended_latent``."""
        mba = MaskBlendArgs(current_latent, nmask, init_latent, 1 - nmask, blended_latent, denoiser, sigma)
        self._each(p, "on_mask_blend", mba)
        return mba.blended_latent

    def postprocess_batches(self, p: StableDiffusionProcessing, images: Any, batch_number: int) -> Any:
        """``postprocess_batch(images=[B,3,H,W] tensor)`` (changes in place count) then ``postprocess_batch_list``
        (may replace the list); returns the batch to turn into pictures, ``[N, 3, H, W]`` in 0..1."""
        import torch

        self._each(p, "postprocess_batch", images=images, batch_number=batch_number)
        batch = PostprocessBatchListArgs(list(images))
        self._each(p, "postprocess_batch_list", batch, batch_number=batch_number)
        if not batch.images:
            return images[:0]
        return torch.stack([torch.as_tensor(im, dtype=images.dtype) for im in batch.images])

    def postprocess_batch(self, p: StableDiffusionProcessing, **kwargs: Any) -> None:
        self._each(p, "postprocess_batch", **kwargs)

    def postprocess_image(self, p: StableDiffusionProcessing, image: Image.Image) -> Image.Image:
        pp = PostprocessImageArgs(image)
        self._each(p, "postprocess_image", pp)
        return pp.image

    def postprocess_maskoverlay(self, p: StableDiffusionProcessing, index: int, mask_for_overlay: Any,
                                overlay_image: Any) -> tuple[Any, Any]:
        ppmo = PostProcessMaskOverlayArgs(index, mask_for_overlay, overlay_image)
        self._each(p, "postprocess_maskoverlay", ppmo)
        return ppmo.mask_for_overlay, ppmo.overlay_image

    def postprocess_image_after_composite(self, p: StableDiffusionProcessing, image: Image.Image) -> Image.Image:
        pp = PostprocessImageArgs(image)
        self._each(p, "postprocess_image_after_composite", pp)
        return pp.image

    def _each(self, p: StableDiffusionProcessing, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook`` of every active always-on script: ``(p, *args, *its script args, **kwargs)``."""
        for script in self._active(self.alwayson_scripts):
            self._call(script, hook, getattr(script, hook), p, *args, *self._args(script, p), **kwargs)

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed) -> None:
        for script in self._active(self.alwayson_scripts):
            self._call(script, "postprocess", script.postprocess, p, processed, *self._args(script, p))

    # -- API --------------------------------------------------------------------------------------------------------
    def bind_api_args(self, p: StableDiffusionProcessing, script_name: str | None, script_args: list[Any] | None,
                      alwayson_scripts: dict[str, Any] | None) -> None:
        """Check an API request's scripts and set ``p.scripts`` / ``p.script_args``: ``script_name`` (a selectable
        script's title, any case) with its positional ``script_args``, and ``alwayson_scripts``
        ``{"<title>": {"args": [...]}}``. Missing trailing args take the UI defaults. Raises ``ValueError`` naming
        the script (unknown: listing the known ones) and the argument (too many, wrong type, out of range)."""
        self._ensure_layout()
        args = list(self._defaults)
        if script_name not in (None, "", "None"):
            script = self._find(script_name, self.selectable_scripts, "script_name")
            args[0] = self.selectable_scripts.index(script) + 1
            self._fill(args, script, script_args or [])
        elif script_args:
            raise ValueError("script_args: given without script_name")
        for name, entry in (alwayson_scripts or {}).items():
            script = self._find(name, self.alwayson_scripts, "alwayson_scripts")
            if not isinstance(entry, dict) or not isinstance(entry.get("args", []), list):
                raise ValueError(f"alwayson_scripts: script {script.name!r}: expected {{\"args\": [...]}}, "
                                 f"got {entry!r}")
            self._fill(args, script, entry.get("args", []))
        p.scripts, p.script_args = self, args

    def run_from_api(self, p: StableDiffusionProcessing, script_name: str | None, script_args: list[Any] | None,
                     alwayson_scripts: dict[str, Any] | None) -> Processed:
        """``bind_api_args`` then ``run``."""
        self.bind_api_args(p, script_name, script_args, alwayson_scripts)
        return self.run(p)

    def _find(self, name: str, candidates: list[Script], field: str) -> Script:
        key = str(name).lower()
        for script in self._active(candidates):
            if script.name == key:
                return script
        other = self.alwayson_scripts if candidates is self.selectable_scripts else self.selectable_scripts
        if any(s.name == key for s in self._active(other)):
            kind = "an always-on script: pass it in alwayson_scripts" if field == "script_name" else \
                "a selectable script: pass it as script_name"
            raise ValueError(f"{field}: script {name!r} is {kind}")
        if key in self.hidden_titles:
            hint = " (Custom code runs only when the app is started with --allow-code)" if key == "custom code" else ""
            raise ValueError(f"{field}: script {name!r} is loaded but not available on {self.tabname}{hint}")
        known = ", ".join(repr(s.name) for s in self._active(candidates)) or "none"
        raise ValueError(f"{field}: script {name!r} not found on {self.tabname}; available: {known}")

    def _fill(self, args: list[Any], script: Script, values: list[Any]) -> None:
        expected = script.args_to - script.args_from
        if not isinstance(values, list):
            raise ValueError(f"script {script.name!r}: args must be a list, got {type(values).__name__}")
        if len(values) > expected:
            raise ValueError(f"script {script.name!r}: takes {expected} argument(s), got {len(values)}")
        for i, value in enumerate(values):
            component = script.controls[i]
            try:
                args[script.args_from + i] = _check_value(component, value)
            except ValueError as e:
                label = getattr(component, "label", None)
                named = f" ({label!r})" if label else ""
                raise ValueError(f"script {script.name!r}: argument {i}{named}: {e}, got {value!r}") from None

    def script_info(self) -> list[dict[str, Any]]:
        """``/sdapi/v1/script-info`` entries of this tab."""
        self._ensure_layout()
        return [{"name": s.name, "is_alwayson": s.alwayson, "is_img2img": self.is_img2img,
                 "args": [_arg_info(c) for c in s.controls]} for s in self._active(self.scripts)]


def _choice_values(component: Any) -> list[Any] | None:
    choices = getattr(component, "choices", None)
    if choices is None:
        return None
    return [c[1] if isinstance(c, (tuple, list)) else c for c in choices]


def _is_multi(component: Any) -> bool:
    import gradio as gr

    return isinstance(component, gr.CheckboxGroup) or bool(getattr(component, "multiselect", False))


def _default_value(component: Any) -> Any:
    """What the component gives a script before the user touches it (an index for ``type="index"`` choices, "" for
    an empty textbox)."""
    import gradio as gr

    value = getattr(component, "value", None)
    if isinstance(component, gr.Textbox) and value is None:
        return ""
    values = _choice_values(component)
    if values is None or getattr(component, "type", None) != "index":
        return value
    if _is_multi(component):
        return [values.index(v) for v in value or [] if v in values]
    return values.index(value) if value in values else None


def _check_value(component: Any, value: Any) -> Any:
    """``value`` as the component would give it; raises ``ValueError`` saying what was expected."""
    import gradio as gr

    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(component, (gr.Slider, gr.Number)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        low, high = component.minimum, component.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"expected a number from {low} to {high}")
        return value
    if isinstance(component, (gr.Textbox, gr.Code)):
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    values = _choice_values(component)
    if values is None:
        return value
    multi = _is_multi(component)
    if multi and not isinstance(value, list):
        raise ValueError("expected a list")
    checked = [_check_choice(component, values, item) for item in (value if multi else [value])]
    return checked if multi else checked[0]


def _check_choice(component: Any, values: list[Any], item: Any) -> Any:
    by_index = getattr(component, "type", None) == "index"
    if by_index and isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(values):
        return item
    if item in values:
        return values.index(item) if by_index else item
    if not values or getattr(component, "allow_custom_value", False):
        return item
    raise ValueError(f"expected one of {values}")


def _arg_info(component: Any) -> dict[str, Any]:
    return {"label": getattr(component, "label", None), "value": getattr(component, "value", None),
            "minimum": getattr(component, "minimum", None), "maximum": getattr(component, "maximum", None),
            "step": getattr(component, "step", None), "choices": _choice_values(component)}


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
scripts_data: list[ScriptClassData] = []
scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
postprocessing_scripts_data: list[ScriptClassData] = []
scripts_postproc: Any = None   # scripts_postprocessing.ScriptPostprocessingRunner (the Extras tab's)
_extension_modules: list[str] = []


def load_scripts(extensions_dir: Path | None, disabled_extensions: Iterable[str] = (),
                 disable_all_extensions: bool = False) -> None:
    """Load the built-in scripts and every enabled extension's scripts (in ``metadata.ini`` order) and create the
    runners ``scripts_txt2img`` / ``scripts_img2img``. Never runs an extension's ``install.py``."""
    global scripts_txt2img, scripts_img2img, scripts_postproc
    unload_scripts()
    a1111.install()
    exts = extensions.discover(extensions_dir, disabled_extensions, disable_all_extensions)
    for path in extensions.builtin.script_files():
        _load_file(path, extensions.builtin)
    for ext in exts:
        for path in ext.script_files() if ext.enabled else []:
            if ext.failed:
                break
            _load_file(path, ext)
    scripts_txt2img = ScriptRunner(_instantiate(), is_img2img=False)
    scripts_img2img = ScriptRunner(_instantiate(), is_img2img=True)
    from modules.scripts_postprocessing import ScriptPostprocessingRunner

    scripts_postproc = ScriptPostprocessingRunner(_instantiate(postprocessing_scripts_data))
    log.info("Loaded %d script class(es) from %d extension(s)", len(scripts_data), len(extensions.active_extensions()))


def _load_file(path: Path, ext: extensions.Extension) -> None:
    global _current_basedir
    source = extensions.register_script_file(path, ext)
    folder = str(REPO_ROOT if ext.is_builtin else ext.path)
    saved_sys_path = list(sys.path)
    sys.path.insert(0, folder)
    _current_basedir = folder
    try:  # a broken extension (sys.exit() included) must not stop the app
        imported, module = extensions.guarded(
            source, "import", lambda: importlib.import_module(f"modules.builtin_scripts.{path.stem}") if ext.is_builtin
            else _exec_extension_file(source.path, ext), timed=False)
    finally:
        sys.path[:] = saved_sys_path
        _current_basedir = str(REPO_ROOT)
    if not imported:
        script_callbacks.remove_script_callbacks(source.path)
        return
    from modules.scripts_postprocessing import ScriptPostprocessing

    for obj in list(vars(module).values()):   # as A1111: every Script class in the file's namespace, once
        if (isinstance(obj, type) and issubclass(obj, Script) and obj.title is not Script.title
                and all(data.script_class is not obj for data in scripts_data)):
            scripts_data.append(ScriptClassData(obj, str(source.path), folder, module))
        elif (isinstance(obj, type) and issubclass(obj, ScriptPostprocessing) and obj is not ScriptPostprocessing
              and all(data.script_class is not obj for data in postprocessing_scripts_data)):
            postprocessing_scripts_data.append(ScriptClassData(obj, str(source.path), folder, module))


def _exec_extension_file(path: Path, ext: extensions.Extension) -> ModuleType:
    name = "ext_" + re.sub(r"\W", "_", f"{ext.name}_{path.stem}")
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _extension_modules.append(name)
    return module


def _instantiate(classes: list[ScriptClassData] | None = None) -> list[Any]:
    created = []
    for data in scripts_data if classes is None else classes:
        source = extensions.script_files[Path(data.path)]
        if not source.active:
            continue
        created_ok, script = extensions.guarded(source, f"__init__ of {data.script_class.__name__}", data.script_class,
                                                timed=False)
        if not created_ok:
            continue
        script.filename, script.source = data.path, source
        created.append(script)
    return created


def unload_scripts() -> None:
    """Tell extensions (``on_script_unloaded``), forget their callbacks, modules and the runners."""
    global scripts_txt2img, scripts_img2img, scripts_postproc
    script_callbacks.script_unloaded_callback()
    script_callbacks.clear_callbacks()
    for name in _extension_modules:
        sys.modules.pop(name, None)
    _extension_modules.clear()
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    scripts_txt2img = scripts_img2img = scripts_postproc = None


# ---------------------------------------------------------------------------------------------------------------------
# What the app wires in
# ---------------------------------------------------------------------------------------------------------------------
def runner_for(tab: str) -> ScriptRunner | None:
    """The loaded runner of ``"txt2img"`` or ``"img2img"`` (None before ``load_scripts``)."""
    return scripts_img2img if tab == "img2img" else scripts_txt2img


_builtin_postproc: Any = None


def postprocessing_runner() -> Any:
    """The Extras tab's ``ScriptPostprocessingRunner`` (before ``load_scripts``: the built-in Upscale alone)."""
    global _builtin_postproc
    if scripts_postproc is not None:
        return scripts_postproc
    if _builtin_postproc is None:
        from modules.builtin_scripts.postprocessing_upscale import ScriptPostprocessingUpscale
        from modules.scripts_postprocessing import ScriptPostprocessingRunner

        _builtin_postproc = ScriptPostprocessingRunner([ScriptPostprocessingUpscale()])
    return _builtin_postproc


def process_with_scripts(p: StableDiffusionProcessing) -> Processed:
    """Run a job through its scripts when it has them (``p.scripts``), else plain ``process_images``."""
    from modules.processing import process_images

    return p.scripts.run(p) if p.scripts is not None else process_images(p)


def api_scripts_list() -> dict[str, list[str]]:
    """``/sdapi/v1/scripts``: the selectable scripts of each tab (lower-cased titles)."""
    return {tab: [s.name for s in runner._active(runner.selectable_scripts)] if runner else []
            for tab, runner in (("txt2img", scripts_txt2img), ("img2img", scripts_img2img))}


def api_script_info() -> list[dict[str, Any]]:
    """``/sdapi/v1/script-info``: every script of both tabs with its args (label, value, minimum, maximum, step,
    choices)."""
    return [info for runner in (scripts_txt2img, scripts_img2img) if runner for info in runner.script_info()]
