"""The Gradio Blocks UI: txt2img, img2img (with inpaint), Extras, PNG Info, Checkpoint Merger, Train, Settings.

Every Generate goes through the runtime's job queue, so a second click while a job runs is queued, not lost, and
Interrupt/Skip answer at once. Handlers turn widget values into a processing object; a value that does not validate
is shown as an error next to the gallery and nothing else changes.
"""
from __future__ import annotations

import html
import logging
import time
from typing import Any, Callable, get_args

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from modules import extension_git, extensions, page, script_callbacks, settings_ui, ui_history, ui_image_browser
from modules import ui_extra_networks, ui_styles
from modules.a1111 import component_hooks
from modules import infotext as infotext_mod
from modules import ui_habits
from modules.runtime import Runtime

log = logging.getLogger(__name__)

RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
POLL_SECONDS = 0.25
OUTPUT_LABEL = "Output"
PREVIOUS_OUTPUT_LABEL = "Output — previous images (the last Generate failed, see the error above)"

CSS = """
#quicksettings {align-items: end}
.progress-text {font-family: monospace}
.error-box {color: #b91c1c; font-weight: 600}
.model-knowledge {font-size: 0.85em; opacity: 0.85}
.model-knowledge ul {margin: 0.2em 0 0 1.2em}
/* a single picture (or a grid) fits the gallery's 420 px whole instead of overflowing it */
.gallery-container .thumbnail-lg {max-height: 360px}
"""
CSS += ui_extra_networks.CSS + ui_styles.CSS + ui_history.CSS + ui_image_browser.CSS


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def format_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
            msg = err.get("msg", "").removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
        text = "; ".join(parts)
    else:
        text = str(e) or type(e).__name__
    return f"<div class='error-box'>Error: {html.escape(text)}</div>"


def readable_images(*components: gr.Image | gr.ImageEditor) -> None:
    """An upload that is not a picture is refused in words (Gradio's own message names component indexes)."""
    def wrap(preprocess: Callable[[Any], Any], label: str) -> Callable[[Any], Any]:
        def checked(payload: Any) -> Any:
            try:
                return preprocess(payload)
            except (OSError, ValueError) as e:   # PIL.UnidentifiedImageError is an OSError
                raise gr.Error(f"The file uploaded as “{label}” is not an image that can be read "
                               f"(PNG, JPEG, WebP, ...): {e}") from e
        return checked

    for component in components:
        component.preprocess = wrap(component.preprocess, component.label or "image")


def infotext_html(text: str) -> str:
    return f"<div class='infotext'><p>{html.escape(text).replace(chr(10), '<br>')}</p></div>"


def progress_html(state: Any, queued_ahead: int | None = None) -> str:
    """The progress line of a job; ``queued_ahead`` (0 = next to run) for a job still waiting in the queue."""
    if queued_ahead is not None:
        ahead = "next to run" if queued_ahead == 0 else f"{queued_ahead} job(s) ahead"
        return f"<div class='progress-text'>In queue: {ahead}</div>"
    pct = int(state.progress() * 100)
    eta = state.eta()
    eta_s = f", ETA {eta:.1f}s" if eta is not None else ""
    step = f"step {state.sampling_step}/{state.sampling_steps}" if state.sampling_steps else "preparing"
    batch = f"batch {min(state.job_no + 1, max(state.job_count, 1))}/{max(state.job_count, 1)}"
    stopping = (" — stopping after this image (press Interrupt again to stop at once)"
                if getattr(state, "stopping_generation", False) and not state.interrupted else "")
    where = f" — on {state.worker}" if getattr(state, "worker", None) else ""   # the Ray worker running it
    return (f"<div class='progress-text'><progress max='100' value='{pct}'></progress> {pct}% — {batch}, "
            f"{step}{eta_s}{where}{stopping}</div>")


def checkpoint_choices(runtime: Runtime) -> list[str]:
    try:
        return [c.title for c in runtime.models.list_checkpoints()]
    except Exception as e:  # noqa: BLE001 - a broken models folder must not break the page
        log.error("Listing checkpoints failed: %s", e)
        return []


def style_choices(runtime: Runtime) -> list[str]:
    """Names of the styles in ``styles.csv`` (read again if it changed)."""
    runtime.prompt_styles.reload_if_changed()
    return list(runtime.prompt_styles.styles)


def upscaler_choices(runtime: Runtime) -> list[str]:
    """None, Lanczos, Nearest and the upscaler model files."""
    try:
        return runtime.upscalers.names()
    except Exception as e:  # noqa: BLE001 - a broken models folder must not break the page
        log.error("Listing upscalers failed: %s", e)
        return ["None", "Lanczos", "Nearest"]


def hires_upscaler_choices(runtime: Runtime) -> list[str]:
    from modules.processing import LATENT_UPSCALE_MODES

    return [*LATENT_UPSCALE_MODES, *upscaler_choices(runtime)]


def sampler_choices() -> tuple[list[str], list[str]]:
    from modules import sd_samplers

    return sd_samplers.visible_sampler_names(), [s.label for s in sd_samplers.schedulers]


# ---------------------------------------------------------------------------------------------------------------------
# running jobs
# ---------------------------------------------------------------------------------------------------------------------
def run_job(runtime: Runtime, kind: str, p: Any):
    """Submit ``p`` to the queue and yield (gallery, info html, progress html, preview, generation info json, error
    html) updates until it finishes."""
    job = runtime.submit(kind, p)
    while not job.future.done():
        ahead = runtime.queue.progress(job.id).queue_position   # None once it runs
        preview = job.state.current_image if runtime.opts.live_previews_enable else None
        progress = progress_html(job.state, ahead) if runtime.opts.show_progressbar else ""
        yield gr.update(), gr.update(), progress, preview, gr.update(), ""
        time.sleep(POLL_SECONDS)
    try:
        processed = job.result().value
    except Exception as e:  # noqa: BLE001 - shown in the page; the session keeps working
        log.error("%s failed: %s", kind, e)
        yield failed(e)
        return
    note = " (interrupted)" if processed.interrupted else ""
    if processed.interrupted and not processed.images:
        note = " (interrupted before an image was finished: nothing was saved)"
    info = processed.infotexts[processed.index_of_first_image] if processed.infotexts else ""
    comments = "".join(f"<p class='comments'>{html.escape(line)}</p>" for line in processed.comments.splitlines())
    shown = [] if runtime.opts.do_not_show_images else processed.images     # A1111's do_not_show_images
    yield (gr.update(value=shown, label=OUTPUT_LABEL),
           infotext_html(info) + comments + (f"<p>{note}</p>" if note else ""),
           f"<div class='progress-text' data-job-end='{job.id}'>Done in {processed.timings.get('total', 0):.2f}s"
           f"{note}</div>", None,
           processed.js(), "")


def failed(e: Exception) -> tuple[Any, ...]:
    """run_job's outputs for a job that failed or was refused: the error beside Generate, the gallery's images
    labelled as the previous ones."""
    end = f"<div class='progress-text' data-job-end='failed-{time.monotonic_ns()}'></div>"   # Generate forever
    return gr.update(label=PREVIOUS_OUTPUT_LABEL), gr.update(), end, None, gr.update(), format_error(e)


def schedule_choices(sampler: str, current: str) -> Any:
    """The Schedule type dropdown for ``sampler``: its schedules, keeping the current one when it is among them."""
    from modules import sd_samplers

    try:
        labels = sd_samplers.schedules_for(sampler)
    except ValueError:
        return gr.update()
    # the value only when it must change: a paste sets sampler and schedule at once, and ``current`` may be the value
    # from before the paste
    return gr.update(choices=labels) if current in labels else gr.update(choices=labels, value=labels[0])


def interrupt_clicked(runtime: Runtime) -> None:
    """Interrupt as A1111's button: with "Don't Interrupt in the middle" on, a job of several images stops after the
    current one (the progress line says so) and a second press stops at once."""
    runtime.queue.interrupt(after_current=runtime.opts.interrupt_after_current)


def seed_from_info(info_json: str) -> int:
    import json

    try:
        return int(json.loads(info_json)["seed"])
    except (ValueError, KeyError, TypeError):
        return -1


# ---------------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------------
class GenerationControls:
    """Widgets shared by txt2img and img2img."""

    def __init__(self, tab: str, native_size: int, samplers: list[str], schedulers: list[str],
                 style_names: list[str]):
        with gr.Row():
            with gr.Column(scale=6):
                self.prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (press Ctrl+Enter to generate)",
                                         elem_id=f"{tab}_prompt")
                self.prompt_tokens = gr.HTML("0/75", elem_id=f"{tab}_token_counter")
                self.model_note = gr.HTML("", elem_id=f"{tab}_model_note")   # what the default model draws
                self.negative_prompt = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_neg_prompt")
                self.negative_tokens = gr.HTML("0/75", elem_id=f"{tab}_negative_token_counter")
            with gr.Column(scale=1, min_width=160):
                self.generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
                with gr.Row():
                    # A1111's ↙: fill every field from the infotext in the prompt box (empty: the last generation's)
                    self.paste = gr.Button("↙️", elem_id=f"{tab}_paste", min_width=40, scale=0,
                                           elem_classes=["tool"])
                    self.interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt")
                    self.skip = gr.Button("Skip", elem_id=f"{tab}_skip")
                self.error = gr.HTML("", elem_id=f"{tab}_error")   # why the last Generate failed, in view
                self.styles = gr.Dropdown(style_names, value=[], multiselect=True, label="Styles",
                                          elem_id=f"{tab}_styles")
                self.style_buttons = ui_styles.style_buttons(tab)   # refresh, style editor, apply to prompt
        self.tab = tab
        self.samplers, self.schedulers = samplers, schedulers
        self.native_size = native_size

    def sampling(self) -> None:
        with gr.Row():
            self.sampler_name = gr.Dropdown(self.samplers, value=self.samplers[0] if self.samplers else None,
                                            label="Sampling method", elem_id=f"{self.tab}_sampling")
            self.scheduler = gr.Dropdown(self.schedulers, value="Automatic", label="Schedule type",
                                         elem_id=f"{self.tab}_scheduler")
            self.steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{self.tab}_steps")

    def size_batch_cfg_seed(self) -> None:
        with gr.Row():
            with gr.Column():
                self.width = gr.Slider(64, 2048, value=self.native_size, step=8, label="Width", elem_id=f"{self.tab}_width")
                self.height = gr.Slider(64, 2048, value=self.native_size, step=8, label="Height", elem_id=f"{self.tab}_height")
            self.res_switch = gr.Button("⇅", elem_id=f"{self.tab}_res_switch_btn", scale=0, min_width=40)  # A1111's swap
            with gr.Column():
                self.n_iter = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{self.tab}_batch_count")
                self.batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{self.tab}_batch_size")
        self.cfg_scale = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{self.tab}_cfg_scale")
        with gr.Accordion("High CFG without burned colours", open=False, elem_id=f"{self.tab}_guidance_accordion"):
            with gr.Row():
                self.guidance_rescale = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="CFG rescale φ (0 = off)",
                                                  elem_id=f"{self.tab}_guidance_rescale")
                self.dynamic_thresholding = gr.Slider(
                    0.0, 1.0, value=0.0, step=0.005, label="Dynamic thresholding percentile (0 = off, else 0.5-1)",
                    elem_id=f"{self.tab}_dynamic_thresholding")
                self.dynamic_thresholding_mimic_scale = gr.Slider(
                    1.0, 30.0, value=7.0, step=0.5, label="Dynamic thresholding mimic CFG scale",
                    elem_id=f"{self.tab}_dynamic_thresholding_mimic_scale")
        with gr.Row():
            self.seed = gr.Number(value=-1, label="Seed", precision=0, elem_id=f"{self.tab}_seed")
            self.random_seed = gr.Button("🎲", elem_id=f"{self.tab}_random_seed", scale=0, min_width=40)
            self.reuse_seed = gr.Button("♻️", elem_id=f"{self.tab}_reuse_seed", scale=0, min_width=40)
        with gr.Accordion("Extra", open=False, elem_id=f"{self.tab}_seed_extras"):
            with gr.Row():
                self.subseed = gr.Number(value=-1, label="Variation seed", precision=0, elem_id=f"{self.tab}_subseed")
                self.subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                                  elem_id=f"{self.tab}_subseed_strength")
            with gr.Row():
                self.seed_resize_from_w = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                                    elem_id=f"{self.tab}_seed_resize_from_w")
                self.seed_resize_from_h = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                                    elem_id=f"{self.tab}_seed_resize_from_h")

    def outputs(self) -> None:
        # "contain": a picture is shown whole, a wide grid too (Gradio's default "cover" crops it to a square)
        self.gallery = gr.Gallery(label=OUTPUT_LABEL, columns=4, height=420, elem_id=f"{self.tab}_gallery",
                                  format="png", interactive=False, object_fit="contain")
        self.progress = gr.HTML("", elem_id=f"{self.tab}_progress")
        self.preview = gr.Image(label="Live preview", type="pil", interactive=False, height=160,
                                elem_id=f"{self.tab}_preview")
        self.info = gr.HTML("", elem_id=f"{self.tab}_html_info")
        self.generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{self.tab}")
        with gr.Row():
            self.send_to_img2img = gr.Button("Send to img2img", elem_id=f"{self.tab}_send_to_img2img")
            self.send_to_inpaint = gr.Button("Send to inpaint", elem_id=f"{self.tab}_send_to_inpaint")
            self.send_to_extras = gr.Button("Send to extras", elem_id=f"{self.tab}_send_to_extras")
        # the picture the send-to buttons take: the one selected in the gallery (-1: none, the first)
        self.selected_index = gr.State(-1)
        self.gallery.select(_selected_index, None, self.selected_index, queue=False)
        if hasattr(self.gallery, "preview_close"):
            self.gallery.preview_close(lambda: -1, None, self.selected_index, queue=False)
        self.generation_info.change(lambda: -1, None, self.selected_index, queue=False)

    def fields(self) -> dict[str, gr.components.Component]:
        """Processing field name -> widget, for the parameters both tabs share."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "styles": self.styles,
                "sampler_name": self.sampler_name, "scheduler": self.scheduler, "steps": self.steps,
                "width": self.width, "height": self.height, "n_iter": self.n_iter, "batch_size": self.batch_size,
                "cfg_scale": self.cfg_scale, "guidance_rescale": self.guidance_rescale,
                "dynamic_thresholding": self.dynamic_thresholding,
                "dynamic_thresholding_mimic_scale": self.dynamic_thresholding_mimic_scale,
                "seed": self.seed, "subseed": self.subseed,
                "subseed_strength": self.subseed_strength, "seed_resize_from_w": self.seed_resize_from_w,
                "seed_resize_from_h": self.seed_resize_from_h}

    @staticmethod
    def common_kwargs(v: dict[str, Any]) -> dict[str, Any]:
        """Widget values -> processing parameters (Gradio gives floats for sliders, None for empty numbers)."""
        return dict(prompt=v["prompt"] or "", negative_prompt=v["negative_prompt"] or "",
                    styles=list(v["styles"] or []), sampler_name=v["sampler_name"], scheduler=v["scheduler"],
                    steps=int(v["steps"]), width=int(v["width"]), height=int(v["height"]), n_iter=int(v["n_iter"]),
                    batch_size=int(v["batch_size"]), cfg_scale=_number(v["cfg_scale"]),
                    guidance_rescale=float(v["guidance_rescale"]), dynamic_thresholding=float(v["dynamic_thresholding"]),
                    dynamic_thresholding_mimic_scale=float(v["dynamic_thresholding_mimic_scale"]),
                    seed=int(v["seed"]) if v["seed"] is not None else -1,
                    subseed=int(v["subseed"]) if v["subseed"] is not None else -1,
                    subseed_strength=float(v["subseed_strength"]),
                    seed_resize_from_w=int(v["seed_resize_from_w"]) if v["seed_resize_from_w"] else -1,
                    seed_resize_from_h=int(v["seed_resize_from_h"]) if v["seed_resize_from_h"] else -1)

    def script_controls(self) -> None:
        """The Script dropdown and always-on script accordions of this tab (their values become p.script_args)."""
        from modules import scripts

        self.runner = scripts.runner_for(self.tab)
        self.script_inputs = self.runner.setup_ui() if self.runner is not None else []

    def wire_generate(self, runtime: Runtime, fields: dict[str, gr.components.Component],
                      build: Callable[[dict[str, Any]], Any]) -> None:
        """Generate (button and Ctrl+Enter) -> build the processing object from the named widget values -> queue."""
        names = list(fields)
        inputs = [*fields.values(), *self.script_inputs]
        outputs = [self.gallery, self.info, self.progress, self.preview, self.generation_info, self.error]

        def submit(*values):
            try:
                p = build(dict(zip(names, values)))
                if self.runner is not None:
                    p.scripts, p.script_args = self.runner, list(values[len(names):])
            except (ValidationError, ValueError) as e:
                yield failed(e)
                return
            yield from run_job(runtime, self.tab, p)

        for event in (self.generate.click, self.prompt.submit):
            # "multiple": a second Generate while one runs is queued (Gradio would drop it by default)
            event(submit, inputs, outputs, concurrency_limit=8, show_progress="hidden", trigger_mode="multiple")

    def wire_common(self, runtime: Runtime) -> None:
        self.interrupt.click(lambda: interrupt_clicked(runtime), None, None, queue=False)
        # the schedule list offers only the schedules the chosen sampler runs (A1111 runs, here every pair is real)
        self.sampler_name.change(schedule_choices, [self.sampler_name, self.scheduler], self.scheduler, queue=False)
        self.skip.click(lambda: runtime.queue.skip() and None, None, None, queue=False)
        self.random_seed.click(lambda: -1, None, self.seed, queue=False)
        self.res_switch.click(lambda w, h: (h, w), [self.width, self.height], [self.width, self.height], queue=False)
        self.reuse_seed.click(seed_from_info, self.generation_info, self.seed, queue=False)
        for box, counter, negative in ((self.prompt, self.prompt_tokens, False),
                                       (self.negative_prompt, self.negative_tokens, True)):
            def count(text: str, styles: list[str], negative: bool = negative) -> str:
                return token_counter(runtime, text, styles, negative=negative)

            for event in (box.change, self.styles.change):
                event(count, [box, self.styles], counter, queue=False, show_progress="hidden")


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else -1


def _number(value: float) -> int | float:
    """Whole numbers stay ints, so the infotext reads ``CFG scale: 7`` as A1111's UI writes it."""
    value = float(value)
    return int(value) if value.is_integer() else value


def token_counter(runtime: Runtime, text: str, styles: list[str] | None = None, *, negative: bool = False,
                  steps: int = 20) -> str:
    """A1111's "count/target" for a prompt as it will be encoded: the selected styles applied, extra-network tags
    (``<lora:...>``) removed, textual-inversion embeddings counted by their vectors. Extensions'
    ``on_before_token_counter`` callbacks may change the text first (a wildcard extension expands its syntax)."""
    from modules import conditioning, extra_networks

    model = runtime.models.current
    if model is None:
        return "?/75"
    params = script_callbacks.BeforeTokenCounterParams(text or "", steps, list(styles or []), not negative)
    script_callbacks.before_token_counter_callback(params)
    text, styles = params.prompt, params.styles
    try:
        database = runtime.prompt_styles
        apply_styles = database.apply_negative_styles_to_prompt if negative else database.apply_styles_to_prompt
        prompt = extra_networks.strip_tags(apply_styles(text or "", styles or []))
        count, limit = conditioning.count_tokens(model, prompt, negative=negative,
                                                 embeddings=runtime.embeddings.loaded_for(model))
    except Exception:  # noqa: BLE001 - a counter must never break typing
        return "?/75"
    return f"{count}/{limit}"


# ---------------------------------------------------------------------------------------------------------------------
# tabs
# ---------------------------------------------------------------------------------------------------------------------
def txt2img_tab(runtime: Runtime, native: int, samplers, schedulers) -> GenerationControls:
    c = GenerationControls("txt2img", native, samplers, schedulers, style_choices(runtime))
    ui_styles.StyleEditor(runtime, c)
    c.extra_networks = ui_extra_networks.ExtraNetworksUI(runtime, c)    # cards under the prompt
    with gr.Row():
        with gr.Column(elem_id="txt2img_settings"):
            c.sampling()
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires_accordion"):
                hr = {"enable_hr": gr.Checkbox(label="Enable", value=False, elem_id="txt2img_enable_hr")}
                with gr.Row():
                    hr["hr_upscaler"] = gr.Dropdown(hires_upscaler_choices(runtime), value="Latent", label="Upscaler",
                                                    elem_id="txt2img_hr_upscaler")
                    hr["hr_second_pass_steps"] = gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                                           elem_id="txt2img_hires_steps")
                    hr["denoising_strength"] = gr.Slider(0, 1, value=0.7, step=0.01, label="Denoising strength",
                                                         elem_id="txt2img_denoising_strength")
                    hr["hr_scale"] = gr.Slider(1, 4, value=2.0, step=0.05, label="Upscale by",
                                               elem_id="txt2img_hr_scale")
                hires_extra_controls(hr, samplers, schedulers)
            c.size_batch_cfg_seed()
            c.script_controls()
        with gr.Column(elem_id="txt2img_results"):
            c.outputs()
    c.wire_common(runtime)
    c.paste_extra = hr      # an infotext fills the hires fields too
    hr["hr_sampler_name"].change(hires_schedule_choices, [hr["hr_sampler_name"], hr["hr_scheduler"]],
                                 hr["hr_scheduler"], queue=False)

    def build(v: dict[str, Any]):
        from modules.processing import StableDiffusionProcessingTxt2Img

        return StableDiffusionProcessingTxt2Img(
            **GenerationControls.common_kwargs(v), enable_hr=bool(v["enable_hr"]), hr_upscaler=v["hr_upscaler"],
            hr_second_pass_steps=int(v["hr_second_pass_steps"]), hr_scale=float(v["hr_scale"]),
            denoising_strength=float(v["denoising_strength"]) if v["enable_hr"] else None,
            hr_resize_x=int(v["hr_resize_x"]), hr_resize_y=int(v["hr_resize_y"]),
            hr_sampler_name=None if v["hr_sampler_name"] == ui_habits.USE_SAME_SAMPLER else v["hr_sampler_name"],
            hr_scheduler=None if v["hr_scheduler"] == ui_habits.USE_SAME_SCHEDULER else v["hr_scheduler"],
            hr_prompt=v["hr_prompt"] or "", hr_negative_prompt=v["hr_negative_prompt"] or "")

    c.wire_generate(runtime, {**c.fields(), **hr}, build)
    return c


def hires_extra_controls(hr: dict[str, Any], samplers: list[str], schedulers: list[str]) -> None:
    """Hires fix's resize-to, sampler / schedule and prompts (A1111's element ids; the sampler and prompts, which
    A1111 shows behind two settings, are in a closed sub-accordion)."""
    with gr.Row():
        hr["hr_resize_x"] = gr.Slider(0, 2048, value=0, step=8, label="Resize width to (0: by Upscale by)",
                                      elem_id="txt2img_hr_resize_x")
        hr["hr_resize_y"] = gr.Slider(0, 2048, value=0, step=8, label="Resize height to (0: by Upscale by)",
                                      elem_id="txt2img_hr_resize_y")
    with gr.Accordion("Hires sampler and prompts", open=False, elem_id="txt2img_hires_extra"):
        with gr.Row():
            hr["hr_sampler_name"] = gr.Dropdown([ui_habits.USE_SAME_SAMPLER, *samplers],
                                                value=ui_habits.USE_SAME_SAMPLER, label="Hires sampling method",
                                                elem_id="hr_sampler")
            hr["hr_scheduler"] = gr.Dropdown([ui_habits.USE_SAME_SCHEDULER, *schedulers],
                                             value=ui_habits.USE_SAME_SCHEDULER, label="Hires schedule type",
                                             elem_id="hr_scheduler")
        hr["hr_prompt"] = gr.Textbox(label="Hires prompt", lines=2, elem_id="hires_prompt",
                                     placeholder="Prompt of the hires pass (empty: the first pass's prompt)")
        hr["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt", lines=2, elem_id="hires_neg_prompt",
                                              placeholder="Negative prompt of the hires pass (empty: the first "
                                                          "pass's)")


def hires_schedule_choices(sampler: str, current: str) -> Any:
    """The hires Schedule type dropdown: "Use same scheduler" and the schedules the hires sampler runs."""
    from modules import sd_samplers

    if sampler == ui_habits.USE_SAME_SAMPLER:
        labels = [s.label for s in sd_samplers.schedulers]
    else:
        try:
            labels = sd_samplers.schedules_for(sampler)
        except ValueError:
            return gr.update()
    labels = [ui_habits.USE_SAME_SCHEDULER, *labels]
    return gr.update(choices=labels) if current in labels else gr.update(choices=labels, value=labels[0])


def img2img_tab(runtime: Runtime, native: int, samplers, schedulers) -> tuple[GenerationControls, dict]:
    c = GenerationControls("img2img", native, samplers, schedulers, style_choices(runtime))
    ui_styles.StyleEditor(runtime, c)
    c.extra_networks = ui_extra_networks.ExtraNetworksUI(runtime, c)    # cards under the prompt
    w: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(elem_id="img2img_settings"):
            with gr.Tabs(elem_id="mode_img2img") as w["mode_tabs"]:
                with gr.Tab("img2img", id="img2img_tab"):
                    w["init_img"] = gr.Image(label="Image for img2img", type="pil", elem_id="img2img_image",
                                             sources=["upload", "clipboard"], height=320)
                with gr.Tab("Inpaint", id="inpaint_tab"):
                    w["inpaint_editor"] = gr.ImageEditor(label="Image for inpainting with mask", type="pil",
                                                         elem_id="img2maskimg", height=320,
                                                         brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                with gr.Tab("Inpaint upload", id="inpaint_upload_tab"):
                    w["upload_img"] = gr.Image(label="Image", type="pil", elem_id="img_inpaint_base", height=240)
                    w["upload_mask"] = gr.Image(label="Mask", type="pil", elem_id="img_inpaint_mask", height=240)
            readable_images(w["init_img"], w["inpaint_editor"], w["upload_img"], w["upload_mask"])
            w["mode"] = gr.State("img2img")
            w["resize_mode"] = gr.Radio(RESIZE_MODES, value=RESIZE_MODES[0], type="index", label="Resize mode",
                                        elem_id="resize_mode")
            with gr.Accordion("Inpaint settings", open=True):
                with gr.Row():
                    w["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
                    w["inpainting_mask_invert"] = gr.Radio(["Inpaint masked", "Inpaint not masked"],
                                                           value="Inpaint masked", type="index", label="Mask mode",
                                                           elem_id="img2img_mask_mode")
                w["inpainting_fill"] = gr.Radio(MASKED_CONTENT, value="original", type="index",
                                                label="Masked content", elem_id="img2img_inpainting_fill")
                with gr.Row():
                    w["inpaint_full_res"] = gr.Radio(["Whole picture", "Only masked"], value="Whole picture",
                                                     type="index", label="Inpaint area",
                                                     elem_id="img2img_inpaint_full_res")
                    w["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4,
                                                              label="Only masked padding, pixels",
                                                              elem_id="img2img_inpaint_full_res_padding")
            c.sampling()
            c.size_batch_cfg_seed()
            w["denoising_strength"] = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                                elem_id="img2img_denoising_strength")
            c.script_controls()
        with gr.Column(elem_id="img2img_results"):
            c.outputs()
    c.wire_common(runtime)
    c.paste_extra = {k: w[k] for k in ("denoising_strength", "mask_blur")}

    def build(v: dict[str, Any]):
        from modules.processing import StableDiffusionProcessingImg2Img

        image, mask = pick_img2img_inputs(v["mode"], v["init_img"], v["inpaint_editor"], v["upload_img"],
                                          v["upload_mask"])
        return StableDiffusionProcessingImg2Img(
            **GenerationControls.common_kwargs(v), init_images=[image], mask=mask, resize_mode=int(v["resize_mode"]),
            mask_blur=int(v["mask_blur"]), inpainting_mask_invert=int(v["inpainting_mask_invert"]),
            inpainting_fill=int(v["inpainting_fill"]), inpaint_full_res=bool(v["inpaint_full_res"]),
            inpaint_full_res_padding=int(v["inpaint_full_res_padding"]),
            denoising_strength=float(v["denoising_strength"]))

    inputs = {k: w[k] for k in ("mode", "init_img", "inpaint_editor", "upload_img", "upload_mask", "resize_mode",
                                "mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
                                "inpaint_full_res_padding", "denoising_strength")}
    c.wire_generate(runtime, {**c.fields(), **inputs}, build)
    return c, w


def pick_img2img_inputs(mode: str, init_img, editor, upload_img, upload_mask) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask of the selected img2img mode; a clear error when one is missing."""
    if mode == "inpaint":
        if not editor or editor.get("background") is None:
            raise ValueError("init_images: upload an image to inpaint")
        background = editor["background"].convert("RGB")
        mask = Image.new("L", background.size, 0)
        for layer in editor.get("layers") or []:
            if layer is not None:
                alpha = layer.convert("RGBA").split()[-1].resize(background.size)
                mask.paste(255, mask=alpha)
        if mask.getbbox() is None:
            raise ValueError("mask: paint the area to regenerate with the brush")
        return background, mask
    if mode == "inpaint upload":
        if upload_img is None:
            raise ValueError("init_images: upload an image")
        if upload_mask is None:
            raise ValueError("mask: upload a mask (white = regenerate)")
        return upload_img.convert("RGB"), upload_mask.convert("L")
    if init_img is None:
        raise ValueError("init_images: upload an image for img2img")
    return init_img.convert("RGB"), None


def pnginfo_tab() -> dict[str, Any]:
    from modules import images

    w: dict[str, Any] = {}
    with gr.Row():
        with gr.Column():
            w["image"] = gr.Image(label="Source", type="pil", elem_id="pnginfo_image", sources=["upload", "clipboard"])
            readable_images(w["image"])
        with gr.Column():
            w["html"] = gr.HTML(elem_id="pnginfo_html")
            w["text"] = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                w["to_txt2img"] = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                w["to_img2img"] = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                w["to_inpaint"] = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")
                w["to_extras"] = gr.Button("Send to extras", elem_id="pnginfo_send_extras")

    def read(image):
        if image is None:
            return "", ""
        geninfo, items = images.read_info_from_image(image)
        rows = "".join(f"<div><b>{html.escape(str(k))}</b><p>{html.escape(str(v))}</p></div>"
                       for k, v in items.items() if k != "parameters")
        if geninfo:
            rows = f"<div><b>parameters</b><p>{html.escape(geninfo).replace(chr(10), '<br>')}</p></div>" + rows
        return rows or "<div>Nothing found in the image.</div>", geninfo or ""

    w["image"].change(read, w["image"], [w["html"], w["text"]])
    return w


def paste_fields(c: GenerationControls) -> tuple[list, Any]:
    """Widgets and a function that fill them from an infotext (PNG Info, send-to, ↙, history): every field the
    infotext names, hires fix and variation seed included (see ``ui_habits.field_values``)."""
    return ui_habits.infotext_filler(c, txt2img=c.tab == "txt2img")


def extras_tab(runtime: Runtime) -> dict[str, Any]:
    """A1111's Extras tab: a single image, several uploads or a folder, through the postprocessing scripts (the
    built-in Upscale and those of extensions), saved to the extras output folder."""
    from modules import postprocessing, scripts

    runner = scripts.postprocessing_runner()
    with gr.Row():
        with gr.Column():
            mode = gr.Number(value=0, visible=False, precision=0, elem_id="extras_mode")
            with gr.Tabs(elem_id="mode_extras") as mode_tabs:
                with gr.Tab("Single Image", id="single_image", elem_id="extras_single_tab") as single_tab:
                    image = gr.Image(label="Source", type="pil", image_mode=None, elem_id="extras_image")
                    readable_images(image)
                with gr.Tab("Batch Process", elem_id="extras_batch_process_tab") as batch_tab:
                    files = gr.File(label="Batch Process", file_count="multiple", elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", elem_id="extras_batch_directory_tab") as directory_tab:
                    input_dir = gr.Textbox(label="Input directory (inside the data folder or an allowed path)",
                                           elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory (empty: the extras output folder)",
                                            elem_id="extras_batch_output_dir")
                    show_results = gr.Checkbox(value=True, label="Show result images",
                                               elem_id="extras_show_extras_results")
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            script_inputs = runner.setup_ui()
        with gr.Column():
            gallery = gr.Gallery(label="Result", columns=2, height=420, format="png", interactive=False,
                                 elem_id="extras_gallery")
            info = gr.HTML(elem_id="extras_html_info")
    for index, tab in enumerate((single_tab, batch_tab, directory_tab)):
        tab.select(lambda index=index: index, None, mode, queue=False)
    image.change(lambda: runner.image_changed(), None, None, queue=False)

    def do_extras(mode, image, files, input_dir, output_dir, show_results, *args):
        mode = int(mode or 0)
        try:
            sources, target = postprocessing.collect_sources(
                mode, image, files, input_dir or "", output_dir or "",
                postprocessing.allowed_roots(runtime.paths.data_dir, runtime.args))
            outdir = target or postprocessing.output_dir(runtime.opts, runtime.paths.data_dir)

            def job(state):
                from modules.job_queue import JobOutput

                result = postprocessing.run_extras(runner, sources, list(args), opts=runtime.opts, outdir=outdir,
                                                   state=state)
                return JobOutput(value=result, infotext=result.infotexts[0] if result.infotexts else None,
                                 files=list(result.files))

            result = runtime.queue.submit("extras", {"mode": mode, "images": len(sources)}, job).result().value
        except Exception as e:  # noqa: BLE001 - shown in the tab; the session keeps working
            return gr.update(), format_error(e)
        shown = result.images if mode != 2 or show_results else []
        return shown, result.html_info

    run.click(do_extras, [mode, image, files, input_dir, output_dir, show_results, *script_inputs], [gallery, info],
              concurrency_limit=4)
    return {"image": image, "mode": mode, "mode_tabs": mode_tabs}   # for "Send to extras"


def merger_tab(runtime: Runtime, ckpt: gr.Dropdown) -> None:
    """A1111's Checkpoint Merger tab (element ids ``modelmerger_*``); the result joins every checkpoint list."""
    from modules import merger
    from modules.job_queue import JobOutput

    fields = merger.MergeRequest.model_fields
    choices = checkpoint_choices(runtime)
    with gr.Row():
        with gr.Column():
            gr.HTML("A merger of two or three checkpoints of the same family. The result is saved to the checkpoint "
                    "folder and listed with the other checkpoints.")
            with gr.Row():
                models = [gr.Dropdown(choices, label=label, elem_id=f"modelmerger_{role}_model_name")
                          for role, label in (("primary", "Primary model (A)"), ("secondary", "Secondary model (B)"),
                                              ("tertiary", "Tertiary model (C)"))]
                refresh = gr.Button("🔄", elem_id="modelmerger_refresh_checkpoint_names", scale=0, min_width=40)
            custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            multiplier = gr.Slider(0, 1, value=fields["multiplier"].default, step=0.05,
                                   label="Multiplier (M) - set to 0 to get model A", elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(get_args(merger.Interpolation)), value=fields["interp_method"].default,
                              label="Interpolation Method", elem_id="modelmerger_interp_method")
            with gr.Row():
                fmt = gr.Radio(["safetensors"], value="safetensors", label="Checkpoint format",
                               elem_id="modelmerger_checkpoint_format")
                half = gr.Checkbox(label="Save as float16", elem_id="modelmerger_save_as_half")
                overwrite = gr.Checkbox(label="Overwrite a file of the same name", elem_id="modelmerger_overwrite")
            config = gr.Radio(list(get_args(merger.ConfigSource)), value=fields["config_source"].default,
                              label="Copy config from", elem_id="modelmerger_config_method")
            vae = gr.Dropdown(["None", *(v.name for v in runtime.models.list_vaes())], value="None",
                              label="Bake in VAE", elem_id="modelmerger_bake_in_vae")
            discard = gr.Textbox(label="Discard weights with matching name", elem_id="modelmerger_discard_weights")
            with gr.Row():
                save_metadata = gr.Checkbox(value=True, label="Save metadata", elem_id="modelmerger_save_metadata")
                add_recipe = gr.Checkbox(value=True, label="Add merge recipe metadata",
                                         elem_id="modelmerger_add_recipe")
                copy_metadata = gr.Checkbox(value=True, label="Copy metadata from merged models",
                                            elem_id="modelmerger_copy_metadata")
            merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column():
            result = gr.HTML(elem_id="modelmerger_result")

    def refreshed():
        runtime.models.refresh()
        titles = checkpoint_choices(runtime)
        return [gr.update(choices=titles) for _ in models]

    def do_merge(a, b, c, name, m, interp, checkpoint_format, as_half, over, config_source, bake, regex, save_meta,
                 recipe, copy_meta):
        try:
            request = merger.MergeRequest(
                primary_model_name=a or "", secondary_model_name=b, tertiary_model_name=c, interp_method=interp,
                multiplier=m, save_as_half=as_half, custom_name=name or "", checkpoint_format=checkpoint_format,
                config_source=config_source, bake_in_vae=bake, discard_weights=regex or "", save_metadata=save_meta,
                add_merge_recipe=recipe, copy_metadata_fields=copy_meta, overwrite=over)
            done = runtime.queue.submit("merge-checkpoint", request.model_dump(mode="json"), lambda state: JobOutput(
                value=merger.merge_checkpoints(runtime.models, request, state))).result().value
        except Exception as e:  # noqa: BLE001 - shown in the tab; nothing was written
            return [gr.update() for _ in range(4)] + [format_error(e)]
        titles = checkpoint_choices(runtime)
        return [gr.update(choices=titles) for _ in range(4)] + [f"<p>{html.escape(done.message)}</p>"]

    refresh.click(refreshed, None, models, queue=False)
    merge.click(do_merge, [*models, custom_name, multiplier, method, fmt, half, overwrite, config, vae, discard,
                           save_metadata, add_recipe, copy_metadata], [*models, ckpt, result], concurrency_limit=1)


def run_training(runtime: Runtime, kind: str, fn: Callable[..., Any], request: Any):
    """Queue a training job and yield (progress html, preview, result html) until it ends."""
    from modules.job_queue import JobOutput

    def job_fn(state):
        result = fn(runtime, request, state)
        return JobOutput(value=result, infotext=result.message, files=[str(f) for f in result.files])

    job = runtime.queue.submit(kind, request.model_dump(mode="json"), job_fn)
    while not job.future.done():
        ahead = runtime.queue.progress(job.id).queue_position   # None once it runs
        text = html.escape(job.state.textinfo or "")
        yield progress_html(job.state, ahead) + f"<div class='progress-text'>{text}</div>", job.state.current_image, ""
        time.sleep(POLL_SECONDS * 2)
    try:
        result = job.result().value
    except Exception as e:  # noqa: BLE001 - shown in the tab; nothing else changes
        yield "", None, format_error(e)
        return
    yield "", job.state.current_image, f"<p>{html.escape(result.message)}</p>"


def train_tab(runtime: Runtime) -> list[gr.components.Component]:
    """The Train tab; returns its width/height sliders (they follow the model's native size like txt2img's)."""
    from modules import training

    def templates() -> list[str]:
        return sorted(training.list_templates(training.template_dirs(runtime.paths.data_dir)))

    def embedding_names() -> list[str]:
        model = runtime.models.current
        if model is None:
            return []
        return sorted(runtime.embeddings.for_model(model).database.word_embeddings)

    with gr.Tabs():
        with gr.Tab("Create embedding"):
            name = gr.Textbox(label="Name", elem_id="train_new_embedding_name")
            init_text = gr.Textbox(label="Initialization text", value="*", elem_id="train_initialization_text")
            nvpt = gr.Slider(1, 75, value=1, step=1, label="Number of vectors per token", elem_id="train_nvpt")
            overwrite = gr.Checkbox(label="Overwrite Old Embedding", value=False)
            create = gr.Button("Create embedding", variant="primary", elem_id="train_create_embedding")
            create_result = gr.HTML(elem_id="train_create_result")

            def do_create(name, init_text, nvpt, overwrite):
                try:
                    request = training.CreateEmbeddingRequest(name=name, init_text=init_text,
                                                              num_vectors_per_token=int(nvpt), overwrite_old=overwrite)
                    job = runtime.queue.submit("create-embedding", request.model_dump(mode="json"),
                                               lambda state: _job_output(training.create_embedding(runtime, request)))
                    return f"Created {html.escape(str(job.result().value))}", gr.update(choices=embedding_names())
                except Exception as e:  # noqa: BLE001 - shown in the tab
                    return format_error(e), gr.update()

        with gr.Tab("Train embedding"):
            with gr.Row():
                embedding = gr.Dropdown(embedding_names(), label="Embedding", elem_id="train_embedding")
                refresh = gr.Button("🔄", scale=0, min_width=40)
            ti = {
                "learn_rate": gr.Textbox(label="Embedding Learning rate", value="0.005", elem_id="train_embedding_learn_rate"),
                "batch_size": gr.Number(label="Batch size", value=1, precision=0),
                "gradient_step": gr.Number(label="Gradient accumulation steps", value=1, precision=0),
                "data_root": gr.Textbox(label="Dataset directory", elem_id="train_dataset_directory"),
                "template_filename": gr.Dropdown(templates(), value="style_filewords.txt", label="Prompt template"),
                "training_width": gr.Slider(64, 2048, value=512, step=8, label="Width"),
                "training_height": gr.Slider(64, 2048, value=512, step=8, label="Height"),
                "steps": gr.Number(label="Max steps", value=100000, precision=0, elem_id="train_steps"),
                "create_image_every": gr.Number(label="Save an image every N steps, 0 to disable", value=500, precision=0),
                "save_embedding_every": gr.Number(label="Save a copy of embedding every N steps, 0 to disable",
                                                  value=500, precision=0),
                "shuffle_tags": gr.Checkbox(label="Shuffle tags by ',' when creating prompts."),
                "tag_drop_out": gr.Slider(0, 1, value=0, step=0.1, label="Drop out tags when creating prompts."),
                "latent_sampling_method": gr.Radio(["once", "deterministic", "random"], value="once",
                                                   label="Choose latent sampling method"),
            }
            with gr.Row():
                train_ti = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
                interrupt_ti = gr.Button("Interrupt", elem_id="train_interrupt")

        with gr.Tab("Train LoRA"):
            lo = {
                "name": gr.Textbox(label="LoRA name", elem_id="train_lora_name"),
                "data_root": gr.Textbox(label="Dataset directory (images with same-named .txt captions)",
                                        elem_id="train_lora_dataset"),
                "rank": gr.Slider(1, 128, value=4, step=1, label="Rank"),
                "learn_rate": gr.Textbox(label="Learning rate", value="1e-4"),
                "steps": gr.Number(label="Steps", value=500, precision=0, elem_id="train_lora_steps"),
                "batch_size": gr.Number(label="Batch size", value=1, precision=0),
                "unet_modules": gr.CheckboxGroup(list(get_args(training.UnetModule)), value=list(training.UNET_MODULES),
                                                 label="UNet layers (attention projections; conv1/conv2: the ResNet "
                                                       "convolutions, for looks the attention layers cannot reach)",
                                                 elem_id="train_lora_modules"),
                "train_text_encoder": gr.Checkbox(label="Also train the text encoder"),
                "min_snr_gamma": gr.Number(label="Min-SNR gamma (0: plain loss; 5 is usual)", value=0,
                                           elem_id="train_lora_min_snr"),
                "overwrite": gr.Checkbox(label="Overwrite an existing LoRA of this name"),
            }
            with gr.Row():
                train_lo = gr.Button("Train LoRA", variant="primary", elem_id="train_train_lora")
                interrupt_lo = gr.Button("Interrupt")

    progress = gr.HTML(elem_id="train_progress")
    preview = gr.Image(label="Preview", type="pil", interactive=False, height=200, elem_id="train_preview")
    result = gr.HTML(elem_id="train_result")

    create.click(do_create, [name, init_text, nvpt, overwrite], [create_result, embedding])
    refresh.click(lambda: gr.update(choices=embedding_names()), None, embedding, queue=False)
    ti_names = list(ti)

    def do_train_ti(embedding_name, *values):
        try:
            fields = {k: (int(v) if isinstance(v, float) and k not in ("tag_drop_out",) else v)
                      for k, v in zip(ti_names, values)}
            request = training.TrainEmbeddingRequest(embedding_name=embedding_name or "", **fields)
        except (ValidationError, ValueError) as e:
            yield "", None, format_error(e)
            return
        yield from run_training(runtime, "train-embedding", training.train_embedding, request)

    lo_names = list(lo)

    def do_train_lora(*values):
        try:
            fields = {k: (int(v) if isinstance(v, float) and k != "min_snr_gamma" else v)
                      for k, v in zip(lo_names, values)}
            request = training.TrainLoraRequest(**(fields | {"min_snr_gamma": fields["min_snr_gamma"] or None}))
        except (ValidationError, ValueError) as e:
            yield "", None, format_error(e)
            return
        yield from run_training(runtime, "train-lora", training.train_lora, request)

    outputs = [progress, preview, result]
    train_ti.click(do_train_ti, [embedding, *ti.values()], outputs, concurrency_limit=4)
    train_lo.click(do_train_lora, list(lo.values()), outputs, concurrency_limit=4)
    for button in (interrupt_ti, interrupt_lo):
        button.click(lambda: runtime.queue.interrupt() and None, None, None, queue=False)
    return [ti["training_width"], ti["training_height"]]


def _job_output(value: Any):
    from modules.job_queue import JobOutput

    return JobOutput(value=value)


def settings_tab(runtime: Runtime, quick: dict[str, Any] | None = None,
                 ) -> tuple[Any, Callable[[], list[Any]], list[gr.components.Component]]:
    """The Settings tab (``modules.settings_ui``): A1111's sections, search, Apply."""
    return settings_ui.settings_tab(runtime, quick)


# ---------------------------------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------------------------------
@component_hooks.page_build   # extensions' before_component / after_component see every component of the page
def create_ui(runtime: Runtime) -> gr.Blocks:
    script_callbacks.before_ui_callback()
    samplers, schedulers = sampler_choices()
    samplers = [s for s in samplers if s not in runtime.opts.hide_samplers] or samplers    # A1111's hide_samplers
    current = runtime.models.current
    native = getattr(current, "native_size", None) or 512
    extension_tabs = script_callbacks.ui_tabs_callback()   # their own gr.Blocks, built outside the page (as A1111)
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        with gr.Row(elem_id="quicksettings"):
            titles = checkpoint_choices(runtime)
            ckpt = gr.Dropdown(titles, value=runtime.opts.sd_model_checkpoint or (titles[0] if titles else None),
                               label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint", scale=4,
                               # a checkpoint hashed on its first load changes title ("x" -> "x [hash]"): a second
                               # event still holding the old title must not be refused as "not in the list"
                               allow_custom_value=True)
            refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
            ckpt_status = gr.HTML(elem_id="sd_checkpoint_status")
            quick = settings_ui.quicksettings(runtime)     # the other options of quicksettings_list

        def change_checkpoint(title):
            if not title:
                return gr.update(), ""
            try:
                model = runtime.switch_model(title)
                return gr.update(value=model.sd_checkpoint_info.title, choices=checkpoint_choices(runtime)), \
                    f"Loaded {html.escape(model.sd_checkpoint_info.title)}"
            except Exception as e:  # noqa: BLE001 - previous model stays; say why
                prev = runtime.models.current
                return gr.update(value=prev.sd_checkpoint_info.title if prev else None), format_error(e)

        def refresh_checkpoints():
            runtime.models.refresh()
            return gr.update(choices=checkpoint_choices(runtime))

        checkpoint_changed = ckpt.input(change_checkpoint, ckpt, [ckpt, ckpt_status], concurrency_limit=1)
        refresh.click(refresh_checkpoints, None, ckpt, queue=False)

        hidden = set(runtime.opts.hidden_tabs)       # A1111's hidden_tabs (Settings cannot be hidden)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img", visible="txt2img" not in hidden):
                t2i = txt2img_tab(runtime, native, samplers, schedulers)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img", visible="img2img" not in hidden):
                i2i, i2i_w = img2img_tab(runtime, native, samplers, schedulers)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras", visible="Extras" not in hidden):
                extras_w = extras_tab(runtime)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo", visible="PNG Info" not in hidden):
                png = pnginfo_tab()
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger", visible="Checkpoint Merger" not in hidden):
                merger_tab(runtime, ckpt)
            with gr.Tab("Train", id="train", elem_id="tab_train", visible="Train" not in hidden):
                train_sizes = train_tab(runtime)
            with gr.Tab("History", id="history", elem_id="tab_history", visible="History" not in hidden):
                ui_history.history_tab(runtime, tabs, t2i, i2i, i2i_w)
            with gr.Tab("Image Browser", id="image_browser", elem_id="tab_image_browser",
                        visible="Image Browser" not in hidden):
                ui_image_browser.image_browser_tab(runtime, tabs, t2i, i2i, i2i_w)
            for blocks, title, elem_id in extension_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}", visible=title not in hidden):
                    blocks.render()
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions", visible="Extensions" not in hidden):
                with gr.Tabs(elem_id="tabs_extensions"):
                    with gr.Tab("Installed", id="extensions_installed"):
                        extensions.create_ui(runtime.opts)
                        extension_git.create_update_ui(runtime)
                    with gr.Tab("Install from URL", id="extensions_install_from_url"):
                        extension_git.create_install_ui(runtime)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_applied, saved_settings, setting_widgets = settings_tab(runtime, quick)

        _wire_mode_tracking(i2i_w)  # img2img sub-mode follows the selected sub-tab
        for c in (t2i, i2i):        # extra-networks cards: preview from the gallery, checkpoint cards switch models
            c.extra_networks.wire(c.gallery, change_checkpoint, [ckpt, ckpt_status])
        if runtime.opts.disable_token_counters:     # A1111's disable_token_counters
            for c in (t2i, i2i):
                c.prompt_tokens.visible = c.negative_tokens.visible = False

        # every setting as JSON for the page's `opts` (javascript/webui.js reads it), made after the Settings tab
        # so that the options extensions add there are in it; filled again on each page load and after Apply
        settings_json = gr.Textbox(lambda: page.options_json(runtime.opts), visible="hidden", elem_id="settings_json")
        for changed in (settings_applied, checkpoint_changed):
            changed.then(lambda: page.options_json(runtime.opts), None, settings_json, queue=False,
                         show_progress="hidden")
        ui_habits.wire_model_note(runtime, demo, checkpoint_changed, [t2i, i2i])

        ui_habits.wire_send_to(runtime, tabs, t2i, i2i, i2i_w, png, extras_w)

        def on_page_load():
            """The model loads after the server starts: show it, and default the size to its native resolution."""
            runtime.model_ready.wait(timeout=60)
            model = runtime.models.current
            title = model.sd_checkpoint_info.title if model is not None else None
            sizes = [gr.update(value=model.native_size) if model is not None else gr.update() for _ in size_sliders]
            return [gr.update(choices=checkpoint_choices(runtime), value=title), *sizes]

        size_sliders = [t2i.width, t2i.height, i2i.width, i2i.height, *train_sizes]
        demo.load(on_page_load, None, [ckpt, *size_sliders], queue=False)
        demo.load(saved_settings, None, setting_widgets, queue=False, show_progress="hidden")
    return demo


def _wire_mode_tracking(w: dict[str, Any]) -> None:
    def on_select(evt: gr.SelectData):
        return {"img2img": "img2img", "Inpaint": "inpaint", "Inpaint upload": "inpaint upload"}.get(evt.value, "img2img")

    w["mode_tabs"].select(on_select, None, w["mode"], queue=False)
