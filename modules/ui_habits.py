"""A1111 page habits the UI builds on: filling every field from an infotext (PNG Info, send-to, the ↙ "read
generation parameters" button), the image a send-to button takes from a gallery, and the note on what the default
model draws. Kept apart from ``ui.py`` so the tab code stays short; ``ui.py`` wires these to its widgets.
"""
from __future__ import annotations

import html
import json
import random
from typing import Any, Callable

import gradio as gr
from PIL import Image

from modules import infotext as infotext_mod
from modules import script_callbacks

USE_SAME_SAMPLER = "Use same sampler"      # A1111's first choice of the hires sampler / schedule dropdowns
USE_SAME_SCHEDULER = "Use same scheduler"
KEEP = object()                            # "leave the widget as it is"


# ---------------------------------------------------------------------------------------------------------------------
# infotext -> widget values
# ---------------------------------------------------------------------------------------------------------------------
def looks_like_infotext(text: str) -> bool:
    """Whether ``text`` ends with a parameters line (``Steps: 20, Sampler: ..., Seed: ...``) as an infotext does."""
    last = (text or "").strip().split("\n")[-1]
    return len(infotext_mod.find_params(last)) >= 3


def _cast(params: dict[str, Any], key: str, cast: Callable[[Any], Any], default: Any = KEEP) -> Any:
    try:
        return cast(params[key])
    except (KeyError, ValueError, TypeError):
        return default


def _choice(value: Any, choices: list[str] | None, default: Any = KEEP) -> Any:
    """A dropdown value only when the dropdown offers it (a value it lacks would be refused by Gradio)."""
    if value is None or value is KEEP:
        return default
    return value if choices is None or value in choices else default


def hires_enabled(params: dict[str, Any]) -> bool:
    """A1111's rule: an infotext with hires parameters was made with Hires. fix on."""
    return ("Hires upscaler" in params or "Hires upscale" in params or "Hires steps" in params
            or _cast(params, "Hires resize-1", int, 0) > 0 or _cast(params, "Hires resize-2", int, 0) > 0)


def field_values(params: dict[str, Any], choices: dict[str, list[str]], *, txt2img: bool) -> dict[str, Any]:
    """Processing field name -> widget value for a parsed infotext (``parse_generation_parameters``). Parameters
    whose absence means "off" (variation seed, seed resize, hires fix) are set back to off; a value a dropdown does
    not offer (an unknown sampler) leaves that dropdown as it is."""
    v: dict[str, Any] = {
        "prompt": params.get("Prompt", ""),
        "negative_prompt": params.get("Negative prompt", ""),
        "steps": _cast(params, "Steps", int),
        "sampler_name": _choice(params.get("Sampler"), choices.get("sampler_name")),
        "scheduler": _choice(params.get("Schedule type", "Automatic"), choices.get("scheduler")),
        "cfg_scale": _cast(params, "CFG scale", float),
        "seed": _cast(params, "Seed", int),
        "width": _cast(params, "Size-1", int),
        "height": _cast(params, "Size-2", int),
        "subseed": _cast(params, "Variation seed", int, -1),
        "subseed_strength": _cast(params, "Variation seed strength", float, 0.0),
        "seed_resize_from_w": _cast(params, "Seed resize from-1", int, 0),
        "seed_resize_from_h": _cast(params, "Seed resize from-2", int, 0),
        "guidance_rescale": _cast(params, infotext_mod.CFG_RESCALE_KEY, float, 0.0),
        "dynamic_thresholding": _cast(params, "Dynamic thresholding", float, 0.0),
        "dynamic_thresholding_mimic_scale": _cast(params, "Dynamic thresholding mimic scale", float),
    }
    if txt2img:
        enabled = hires_enabled(params)
        v |= {
            "enable_hr": enabled,
            "hr_upscaler": _choice(params.get("Hires upscaler"), choices.get("hr_upscaler")),
            "hr_scale": _cast(params, "Hires upscale", float, 2.0) if enabled else KEEP,
            "hr_second_pass_steps": _cast(params, "Hires steps", int, 0),
            "hr_resize_x": _cast(params, "Hires resize-1", int, 0),
            "hr_resize_y": _cast(params, "Hires resize-2", int, 0),
            "hr_sampler_name": _choice(params.get("Hires sampler"), choices.get("hr_sampler_name"), USE_SAME_SAMPLER),
            "hr_scheduler": _choice(params.get("Hires schedule type"), choices.get("hr_scheduler"),
                                    USE_SAME_SCHEDULER),
            "hr_prompt": params.get("Hires prompt", ""),
            "hr_negative_prompt": params.get("Hires negative prompt", ""),
            "denoising_strength": _cast(params, "Denoising strength", float) if enabled else KEEP,
        }
    else:
        v |= {
            "denoising_strength": _cast(params, "Denoising strength", float),
            "mask_blur": _cast(params, "Mask blur", int),
        }
    return v


def paste_targets(c: Any) -> dict[str, Any]:
    """The widgets an infotext fills on a tab's controls ``c`` (``ui.GenerationControls``): the shared fields plus
    the tab's own (``c.paste_extra``: txt2img's hires fix, img2img's denoising strength and mask blur)."""
    shared = {k: w for k, w in c.fields().items() if k not in ("styles", "n_iter", "batch_size")}
    return {**shared, **getattr(c, "paste_extra", {})}


def _dropdown_choices(widgets: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for name, w in widgets.items():
        if isinstance(w, gr.Dropdown):
            out[name] = [ch[1] if isinstance(ch, (tuple, list)) else ch for ch in (w.choices or [])]
    return out


def infotext_filler(c: Any, *, txt2img: bool) -> tuple[list[Any], Callable[[str], list[Any]]]:
    """Widgets and a function that fills them from an infotext; an empty text leaves them as they are. Extensions'
    ``on_infotext_pasted`` callbacks see (and may change) the parsed parameters first."""
    widgets = paste_targets(c)
    names = list(widgets)
    choices = _dropdown_choices(widgets)

    def fill(text: str) -> list[Any]:
        if not text or not text.strip():
            return [gr.update() for _ in names]
        params = infotext_mod.parse_generation_parameters(text)
        script_callbacks.infotext_pasted_callback(text, params)
        values = field_values(params, choices, txt2img=txt2img)
        return [gr.update() if values.get(n, KEEP) is KEEP else values[n] for n in names]

    return list(widgets.values()), fill


# ---------------------------------------------------------------------------------------------------------------------
# galleries
# ---------------------------------------------------------------------------------------------------------------------
def gallery_image(gallery: Any, index: int | None) -> Image.Image | None:
    """The picture at ``index`` of a gallery's value (the first when nothing is selected)."""
    if not gallery:
        return None
    index = index if index is not None and 0 <= index < len(gallery) else 0
    item = gallery[index]
    img = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(img, dict):     # a Gradio FileData-like dict
        img = img.get("path") or (img.get("image") or {}).get("path")
    if isinstance(img, str):
        with Image.open(img) as opened:
            opened.load()
            return opened.copy()
    return img


def gallery_infotext(info_json: str, index: int | None) -> str:
    """The infotext of the picture at ``index`` (from the generation-info JSON: one infotext per gallery picture,
    the grid's first)."""
    try:
        info = json.loads(info_json or "{}")
    except ValueError:
        return ""
    texts = info.get("infotexts") or []
    if not texts:
        return ""
    index = index if index is not None and 0 <= index < len(texts) else 0
    return texts[index]


def last_generation_infotext(runtime: Any) -> str:
    """The infotext of the newest finished txt2img / img2img job in the history (A1111 reads ``params.txt``)."""
    for entry in runtime.queue.history(limit=50):
        if entry.kind in ("txt2img", "img2img") and entry.infotext:
            return entry.infotext
    return ""


# ---------------------------------------------------------------------------------------------------------------------
# what the default model knows
# ---------------------------------------------------------------------------------------------------------------------
def is_default_model(model: Any) -> bool:
    from modules.sd_models import DEFAULT_MODEL_CONFIG

    info = getattr(model, "sd_checkpoint_info", None)
    try:
        return info is not None and info.metadata().get("sd_config") == DEFAULT_MODEL_CONFIG
    except Exception:  # noqa: BLE001 - an unreadable header only means "not the default model"
        return False


def example_prompts(count: int = 3) -> list[str]:
    """Prompts in the words the default model was trained on (captions of scenes of its world)."""
    from modules import world

    rng = random.Random(7)
    templates = (world.FULL_TEMPLATE, 0, 1, 3)
    return [world.caption(world.sample_scene(rng, jitter=False), template=templates[i % len(templates)])
            for i in range(count)]


def _words(items: Any) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def knowledge_text() -> str:
    """What the default model can draw, from the vocabulary of its training world (``modules/world.py``)."""
    from modules import world

    styles = [s for s in world.BASE_STYLES if s != "solid"]
    style_note = f" ({_words(styles)})" if styles else ""
    return (f"The default model draws one {_words(world.SIZES)} {_words(world.SHAPES)}{style_note} "
            f"in one of {len(world.COLORS)} colours ({_words(world.COLORS)}) on a background of another colour, "
            f"placed {_words(world.POSITION_PHRASES.values())}; {world.IMAGE_SIZE}×{world.IMAGE_SIZE} pixels. "
            "Other words are unknown to it.")


def knowledge_note_html(model: Any) -> str:
    if not is_default_model(model):
        return ""
    examples = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in example_prompts())
    return (f"<div class='model-knowledge'><p>{html.escape(knowledge_text())}</p>"
            f"<p>For example:</p><ul>{examples}</ul></div>")


def prompt_placeholder(model: Any) -> str:
    base = "Prompt (press Ctrl+Enter to generate)"
    if not is_default_model(model):
        return base
    return base + "\ne.g. " + "\ne.g. ".join(example_prompts(2))


# ---------------------------------------------------------------------------------------------------------------------
# wiring (called by ui.create_ui)
# ---------------------------------------------------------------------------------------------------------------------
def _sent_fields(runtime: Any, names: list[str], values: list[Any]) -> list[Any]:
    """A1111's ``send_seed`` / ``send_size`` settings: off, a send-to from a gallery keeps the target's seed/size."""
    keep = set()
    if not getattr(runtime.opts, "send_seed", True):
        keep |= {"seed", "subseed"}
    if not getattr(runtime.opts, "send_size", True):
        keep |= {"width", "height"}
    return [gr.update() if n in keep else v for n, v in zip(names, values)]


def wire_send_to(runtime: Any, tabs: Any, t2i: Any, i2i: Any, i2i_w: dict[str, Any], png: dict[str, Any],
                 extras_w: dict[str, Any]) -> None:
    """Send to img2img / inpaint / extras from the txt2img and img2img galleries (the selected picture and its
    parameters) and from PNG Info; PNG Info's Send to txt2img; the ↙ buttons."""
    t2i_targets, t2i_fill = infotext_filler(t2i, txt2img=True)
    i2i_targets, i2i_fill = infotext_filler(i2i, txt2img=False)
    i2i_names = list(paste_targets(i2i))
    to_img2img = [i2i_w["init_img"], tabs, i2i_w["mode_tabs"], i2i_w["mode"]]
    to_inpaint = [i2i_w["inpaint_editor"], tabs, i2i_w["mode_tabs"], i2i_w["mode"]]
    to_extras = [extras_w["image"], tabs, extras_w["mode_tabs"], extras_w["mode"]]

    def img2img_outputs(image: Any) -> list[Any]:
        return [image, gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img_tab"), "img2img"]

    def inpaint_outputs(image: Any) -> list[Any]:
        editor = {"background": image, "layers": [], "composite": image} if image is not None else None
        return [editor, gr.Tabs(selected="img2img"), gr.Tabs(selected="inpaint_tab"), "inpaint"]

    def extras_outputs(image: Any) -> list[Any]:
        return [image, gr.Tabs(selected="extras"), gr.Tabs(selected="single_image"), 0]

    for c in (t2i, i2i):
        sources = [c.gallery, c.selected_index, c.generation_info]

        def send(make: Callable[[Any], list[Any]], paste: bool) -> Callable[..., list[Any]]:
            def handler(gallery, index, info_json):
                image = gallery_image(gallery, index)
                if not paste:
                    return make(image)
                values = _sent_fields(runtime, i2i_names, i2i_fill(gallery_infotext(info_json, index)))
                return [*make(image), *values]
            return handler

        c.send_to_img2img.click(send(img2img_outputs, True), sources, [*to_img2img, *i2i_targets])
        c.send_to_inpaint.click(send(inpaint_outputs, True), sources, [*to_inpaint, *i2i_targets])
        c.send_to_extras.click(send(extras_outputs, False), sources, to_extras)

    png["to_txt2img"].click(lambda text: [gr.Tabs(selected="txt2img"), *t2i_fill(text)], png["text"],
                            [tabs, *t2i_targets])
    png["to_img2img"].click(lambda image, text: [*img2img_outputs(image), *i2i_fill(text)], [png["image"], png["text"]],
                            [*to_img2img, *i2i_targets])
    png["to_inpaint"].click(lambda image, text: [*inpaint_outputs(image), *i2i_fill(text)], [png["image"], png["text"]],
                            [*to_inpaint, *i2i_targets])
    png["to_extras"].click(extras_outputs, png["image"], to_extras)

    for c, targets, fill in ((t2i, t2i_targets, t2i_fill), (i2i, i2i_targets, i2i_fill)):
        def paste(prompt: str, fill: Callable[[str], list[Any]] = fill, count: int = len(targets)) -> list[Any]:
            if looks_like_infotext(prompt):
                return fill(prompt)
            if not (prompt or "").strip():
                return fill(last_generation_infotext(runtime))
            return [gr.update() for _ in range(count)]    # a plain prompt: nothing to read

        c.paste.click(paste, c.prompt, targets, queue=False)


def wire_model_note(runtime: Any, demo: Any, checkpoint_changed: Any, controls: list[Any]) -> None:
    """The note on what the default model draws (and example prompts as the prompt's placeholder), shown while the
    default model is loaded: at each page load and after a checkpoint change."""
    def updates() -> list[Any]:
        runtime.model_ready.wait(timeout=60)
        model = runtime.models.current
        note, placeholder = knowledge_note_html(model), prompt_placeholder(model)
        return [*(gr.update(value=note) for _ in controls),
                *(gr.update(placeholder=placeholder) for _ in controls)]

    outputs = [*(c.model_note for c in controls), *(c.prompt for c in controls)]
    demo.load(updates, None, outputs, queue=False, show_progress="hidden")
    checkpoint_changed.then(updates, None, outputs, queue=False, show_progress="hidden")
