"""App-level callbacks for extensions, with A1111's names: ``on_<event>(callback, *, name=None)`` registers,
``<event>_callback(...)`` calls every registered callback.

Every call is contained: a callback that raises is logged with its name and file, taken out for the rest of the run,
and its extension is marked as failed (``modules.extensions``), so the app and the job carry on. The sampling
callbacks (``on_cfg_denoiser``, ``on_cfg_denoised``, ``on_cfg_after_cfg``) are called by ``processing.cfg_denoise``
only when one is registered (``cfg_callbacks_active()``), so they cost nothing otherwise.

What each event receives:

=======================  ================================================================================
``app_started``          ``(demo: gr.Blocks | None, app: FastAPI)`` once the server app exists
``ui_tabs``              ``()`` -> list of ``(gr.Blocks, title, elem_id)`` tabs to add to the page
``ui_settings``          ``()`` before the Settings tab is built
``model_loaded``         ``(sd_model)`` after a checkpoint is loaded
``before_image_saved``   ``(ImageSaveParams)`` before an image is written (may change image / pnginfo)
``image_saved``          ``(ImageSaveParams)`` after it was written
``cfg_denoiser``         ``(CFGDenoiserParams)`` before the UNet call of each sampling step
``cfg_denoised``         ``(CFGDenoisedParams)`` after the UNet call, before CFG combines the outputs
``cfg_after_cfg``        ``(AfterCFGCallbackParams)`` after CFG combined them
``infotext_pasted``      ``(infotext: str, params: dict)`` after an infotext was parsed for pasting
``script_unloaded``      ``()`` before scripts are unloaded
``extra_noise``          ``(ExtraNoiseParams)`` img2img / hires with ``img2img_extra_noise`` > 0 (may replace noise)
``image_grid``           ``(ImageGridLoopParams)`` before a grid is drawn (may change imgs, cols, rows)
``before_ui``            ``()`` before the page is built
``before_component``     ``(component, **kwargs)`` before each Gradio component of the page is created
``after_component``      ``(component, **kwargs)`` after it was created
``list_optimizers``      ``(list)`` append cross-attention optimizations (A1111's ``SdOptimization``)
``list_unets``           ``(list)`` append alternative UNets (A1111's ``SdUnetOption``)
``before_token_counter`` ``(BeforeTokenCounterParams)`` before the prompt's tokens are counted (may change it)
=======================  ================================================================================
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules import extensions

log = logging.getLogger(__name__)

EVENTS = ("app_started", "ui_tabs", "ui_settings", "model_loaded", "before_image_saved", "image_saved",
          "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "infotext_pasted", "script_unloaded", "extra_noise",
          "image_grid", "before_ui", "before_component", "after_component", "list_optimizers", "list_unets",
          "before_token_counter")


# ---------------------------------------------------------------------------------------------------------------------
# Parameter objects (callbacks change the fields in place)
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class CFGDenoiserParams:
    """Before the UNet call of one sampling step. ``x`` is the UNet's latent input for the whole CFG batch (one row
    per AND-part of each image, then one per image for the negative prompt), ``image_cond`` the extra input channels
    of inpainting models (None otherwise), ``sigma`` the noise level of each row (``sqrt((1-ᾱ)/ᾱ)``),
    ``text_cond`` / ``text_uncond`` the prompt / negative prompt embeddings of those rows. Assigning new tensors of the
    same shapes to ``x``, ``image_cond``, ``text_cond`` or ``text_uncond`` changes what the UNet gets."""
    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None   # the loaded SDModel


@dataclass
class CFGDenoisedParams:
    """After the UNet call: ``x`` is its output for the whole CFG batch (replaceable)."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None   # the UNet


@dataclass
class AfterCFGCallbackParams:
    """After CFG combined the outputs: ``x`` is the noise prediction per image (replaceable)."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class ExtraNoiseParams:
    """img2img extra noise: ``noise`` (replaceable) is added, times ``img2img_extra_noise``, to ``xi``, the noised
    start of the init latents ``x``."""
    noise: Any
    x: Any
    xi: Any


@dataclass
class ImageGridLoopParams:
    """A grid about to be drawn from ``imgs`` in ``cols`` x ``rows`` cells (each replaceable)."""
    imgs: list[Any]
    cols: int
    rows: int


@dataclass
class BeforeTokenCounterParams:
    """The text the token counter is about to count (``prompt`` replaceable)."""
    prompt: str
    steps: int
    styles: list[str]
    is_positive: bool = True


@dataclass
class ImageSaveParams:
    image: Any
    p: Any
    filename: str
    pnginfo: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class ScriptCallback:
    script: str                      # file that registered it
    callback: Callable[..., Any]
    name: str | None = None
    owner: Any = None                # extensions.ScriptFile / Extension, or None for app code

    @property
    def label(self) -> str:
        return self.name or getattr(self.callback, "__qualname__", repr(self.callback))


_callbacks: dict[str, list[ScriptCallback]] = {event: [] for event in EVENTS}


def _add(event: str, callback: Callable[..., Any], name: str | None) -> None:
    if not callable(callback):
        raise TypeError(f"on_{event}: callback must be callable, got {callback!r}")
    filename = sys._getframe(2).f_code.co_filename   # whoever called on_<event>()
    _callbacks[event].append(ScriptCallback(filename, callback, name, extensions.owner_of(filename)))


def _call(event: str, *args: Any, **kwargs: Any) -> list[Any]:
    """Call every active callback of ``event``; returns their results. A failing callback is contained."""
    results = []
    for cb in list(_callbacks[event]):
        if cb.owner is not None and not cb.owner.active:
            continue
        # Contained (sys.exit() and overruns too): reported, taken out, the caller carries on.
        where = f"callback {event} ({cb.label})" + ("" if cb.owner is not None else f" from {cb.script}")
        ok, result = extensions.guarded(cb.owner, where, cb.callback, args, kwargs, timed=event not in _PAGE_EVENTS)
        if ok:
            results.append(result)
        else:
            _remove(event, cb)
    return results


# Callbacks that build parts of the page run on the builder's thread, untimed (contained all the same).
_PAGE_EVENTS = frozenset({"ui_tabs", "ui_settings", "before_ui", "before_component", "after_component"})


def _remove(event: str, cb: ScriptCallback) -> None:
    if cb in _callbacks[event]:
        _callbacks[event].remove(cb)


def remove_script_callbacks(filename: str | Path) -> None:
    """Forget every callback registered by the file ``filename``."""
    target = str(filename)
    for event in EVENTS:
        _callbacks[event] = [cb for cb in _callbacks[event] if cb.script != target]


def remove_current_script_callbacks() -> None:
    """Forget the callbacks registered by the calling file (A1111: a script cleaning up after itself)."""
    remove_script_callbacks(sys._getframe(1).f_code.co_filename)


def remove_callbacks_for_function(callback: Callable[..., Any]) -> None:
    for event in EVENTS:
        _callbacks[event] = [cb for cb in _callbacks[event] if cb.callback != callback]


def clear_callbacks() -> None:
    for event in EVENTS:
        _callbacks[event].clear()


def cfg_callbacks_active() -> bool:
    """True when a sampling-step callback is registered (the sampler skips building their parameters otherwise)."""
    return bool(_callbacks["cfg_denoiser"] or _callbacks["cfg_denoised"] or _callbacks["cfg_after_cfg"])


# ---------------------------------------------------------------------------------------------------------------------
# Registration (A1111 names)
# ---------------------------------------------------------------------------------------------------------------------
def on_app_started(callback: Callable[[Any, Any], None], *, name: str | None = None) -> None:
    _add("app_started", callback, name)


def on_ui_tabs(callback: Callable[[], list[tuple[Any, str, str]]], *, name: str | None = None) -> None:
    _add("ui_tabs", callback, name)


def on_ui_settings(callback: Callable[[], None], *, name: str | None = None) -> None:
    _add("ui_settings", callback, name)


def on_model_loaded(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    _add("model_loaded", callback, name)


def on_before_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    _add("before_image_saved", callback, name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    _add("image_saved", callback, name)


def on_cfg_denoiser(callback: Callable[[CFGDenoiserParams], None], *, name: str | None = None) -> None:
    _add("cfg_denoiser", callback, name)


def on_cfg_denoised(callback: Callable[[CFGDenoisedParams], None], *, name: str | None = None) -> None:
    _add("cfg_denoised", callback, name)


def on_cfg_after_cfg(callback: Callable[[AfterCFGCallbackParams], None], *, name: str | None = None) -> None:
    _add("cfg_after_cfg", callback, name)


def on_infotext_pasted(callback: Callable[[str, dict[str, Any]], None], *, name: str | None = None) -> None:
    _add("infotext_pasted", callback, name)


def on_script_unloaded(callback: Callable[[], None], *, name: str | None = None) -> None:
    _add("script_unloaded", callback, name)


def on_extra_noise(callback: Callable[[ExtraNoiseParams], None], *, name: str | None = None) -> None:
    _add("extra_noise", callback, name)


def on_image_grid(callback: Callable[[ImageGridLoopParams], None], *, name: str | None = None) -> None:
    _add("image_grid", callback, name)


def on_before_ui(callback: Callable[[], None], *, name: str | None = None) -> None:
    _add("before_ui", callback, name)


def on_before_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    _add("before_component", callback, name)


def on_after_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    _add("after_component", callback, name)


def on_list_optimizers(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    _add("list_optimizers", callback, name)


def on_list_unets(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    _add("list_unets", callback, name)


def on_before_token_counter(callback: Callable[[BeforeTokenCounterParams], None], *, name: str | None = None) -> None:
    _add("before_token_counter", callback, name)


# ---------------------------------------------------------------------------------------------------------------------
# Calling
# ---------------------------------------------------------------------------------------------------------------------
def app_started_callback(demo: Any, app: Any) -> None:
    _call("app_started", demo, app)


def ui_tabs_callback() -> list[tuple[Any, str, str]]:
    """Every tab the extensions add, as ``(blocks, title, elem_id)``; a malformed answer is reported and skipped."""
    tabs = []
    for result in _call("ui_tabs"):
        for tab in result or []:
            if isinstance(tab, (tuple, list)) and len(tab) >= 3:
                tabs.append((tab[0], str(tab[1]), str(tab[2])))
            else:
                log.error("on_ui_tabs callback returned %r; expected (blocks, title, elem_id) tuples", tab)
    return tabs


def ui_settings_callback() -> None:
    _call("ui_settings")


def model_loaded_callback(sd_model: Any) -> None:
    _call("model_loaded", sd_model)


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _call("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _call("image_saved", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _call("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _call("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _call("cfg_after_cfg", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _call("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _call("script_unloaded")


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _call("extra_noise", params)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _call("image_grid", params)


def before_ui_callback() -> None:
    _call("before_ui")


def before_component_callback(component: Any, **kwargs: Any) -> None:
    _call("before_component", component, **kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    _call("after_component", component, **kwargs)


def list_optimizers_callback() -> list[Any]:
    """What the extensions add to the list of cross-attention optimizations."""
    found: list[Any] = []
    _call("list_optimizers", found)
    return found


def list_unets_callback() -> list[Any]:
    """What the extensions add to the list of alternative UNets."""
    found: list[Any] = []
    _call("list_unets", found)
    return found


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _call("before_token_counter", params)
