"""Attention maps: where each word of the prompt lands in the picture.

An always-on script. When enabled it records the UNet's cross-attention for the job (``modules.attention``: a
diffusers attention processor set for the job, averaged over heads, over the layers of the chosen attention-grid size
and over the chosen part of the sampling) and adds, after the job's images, one heat-map overlay per word of each
image's prompt (and per token of a word that spans several, if asked), the word written above it. Each map's infotext
is its image's, with ``Attention map: <word>``; the API returns the maps as extra images.

Args (API ``alwayson_scripts: {"attention maps": {"args": [...]}}``): enabled, words (comma-separated; empty = every
word), per token, layers ("finest", "all", "coarsest"), start and end of the recorded steps (fractions).
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from modules import attention, extra_networks, infotext, scripts
from modules.images import GridAnnotation, draw_grid_annotations
from modules.processing import GenerationError, Processed, StableDiffusionProcessing

INFOTEXT_KEY = "Attention map"
OVERLAY_OPACITY = 0.6


class AttentionMaps(scripts.Script):
    def title(self) -> str:
        return "Attention maps"

    def show(self, is_img2img: bool) -> object:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        enabled = gr.Checkbox(False, label="Show where each word lands (cross-attention heat maps)",
                              elem_id=self.elem_id("enabled"))
        words = gr.Textbox("", label="Words (comma-separated; empty: every word)", elem_id=self.elem_id("words"))
        with gr.Row():
            per_token = gr.Checkbox(False, label="Also each token of a word that spans several",
                                    elem_id=self.elem_id("per_token"))
            layers = gr.Radio(list(attention.LAYER_CHOICES), value="finest", label="Attention layers (grid size)",
                              elem_id=self.elem_id("layers"))
        with gr.Row():
            start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="From (fraction of the steps)",
                              elem_id=self.elem_id("start"))
            end = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="To (fraction of the steps)",
                            elem_id=self.elem_id("end"))
        return [enabled, words, per_token, layers, start, end]

    def process(self, p: StableDiffusionProcessing, enabled: bool, words: str, per_token: bool, layers: str,
                start: float, end: float) -> None:
        if not enabled:
            return
        if layers not in attention.LAYER_CHOICES:
            raise GenerationError(f"Attention maps: layers must be one of {', '.join(attention.LAYER_CHOICES)}, "
                                  f"not {layers!r}")
        if not 0.0 <= float(start) < float(end) <= 1.0:
            raise GenerationError(f"Attention maps: the recorded steps must satisfy 0 <= from < to <= 1 "
                                  f"(got from {start}, to {end})")
        p.attention_controllers.append(MapsRecorder(float(start), float(end)))

    def process_batch(self, p: StableDiffusionProcessing, *args: Any, batch_number: int = 0, **kwargs: Any) -> None:
        recorder = _recorder(p)
        if recorder is not None:
            recorder.offset = batch_number * p.batch_size

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed, enabled: bool, words: str,
                    per_token: bool, layers: str, start: float, end: float) -> None:
        recorder = _recorder(p)
        if recorder is None:
            return
        p.attention_controllers.remove(recorder)
        wanted = [w.strip().lower() for w in (words or "").split(",") if w.strip()]
        first = processed.index_of_first_image
        own = list(zip(processed.images[first:], processed.infotexts[first:]))
        notes: set[str] = set()
        for index, (image, text) in enumerate(own):
            for caption, heat in word_maps(p, recorder, index, wanted, per_token, layers, notes):
                overlay = heatmap_overlay(image, heat)
                labelled = draw_grid_annotations(overlay, overlay.width, overlay.height, [[GridAnnotation(caption)]], [[]])
                map_text = f"{text}, {INFOTEXT_KEY}: {infotext.quote(caption)}"
                if p.opts.enable_pnginfo:
                    labelled.info["parameters"] = map_text
                processed.images.append(labelled)
                processed.infotexts.append(map_text)
        if notes:
            processed.comments = "\n".join(filter(None, [processed.comments, *sorted(notes)]))


class MapsRecorder(attention.CrossAttentionRecorder):
    """The recorder this script puts on a job (its own class, so that other scripts' recorders are not taken)."""


def _recorder(p: StableDiffusionProcessing) -> MapsRecorder | None:
    return next((c for c in p.attention_controllers if isinstance(c, MapsRecorder)), None)


def word_maps(p: StableDiffusionProcessing, recorder: attention.CrossAttentionRecorder, index: int,
              wanted: list[str], per_token: bool, layers: str, notes: set[str]) -> list[tuple[str, torch.Tensor]]:
    """(caption, map ``[h, w]``) of the chosen words of image ``index``'s prompt; words asked for but not in the
    prompt are listed in ``notes``."""
    text = attention.main_prompt_text(p.all_prompts[index], p.steps)
    embeddings = extra_networks.EmbeddingUsage(getattr(p.prompt_resources, "embeddings", None))
    words = [w for w in attention.prompt_words(p.sd_model, text, emphasis=p.opts.emphasis, embeddings=embeddings)
             if not w.is_punctuation]
    found = {w.text.lower() for w in words}
    notes.update(f"Attention maps: {w!r} is not a word of the prompt {text!r}" for w in wanted if w not in found)
    result = []
    for word in words:
        if wanted and word.text.lower() not in wanted:
            continue
        heat = recorder.map(index, word.positions, layers)
        if heat is None:
            continue
        result.append((word.text, heat))
        if per_token and len(word.positions) > 1:
            for position, piece in zip(word.positions, word.tokens):
                token_heat = recorder.map(index, [position], layers)
                if token_heat is not None:
                    result.append((f"{word.text} ({piece})", token_heat))
    return result


def normalised(heat: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The map resized to ``size`` (width, height) and scaled to [0, 1]."""
    up = torch.nn.functional.interpolate(heat[None, None].float(), size=(size[1], size[0]), mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    low, high = float(up.min()), float(up.max())
    return (up - low) / (high - low) if high > low else np.zeros_like(up)


def heatmap_overlay(image: Image.Image, heat: torch.Tensor) -> Image.Image:
    """``image`` with the map laid over it in a blue (cold) to red (hot) colour scale."""
    v = normalised(heat, image.size)[..., None]
    colours = np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)  # the "jet" scale: r, g, b ramps
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    mixed = (1 - OVERLAY_OPACITY) * base + OVERLAY_OPACITY * colours
    return Image.fromarray((mixed * 255).round().astype(np.uint8))
