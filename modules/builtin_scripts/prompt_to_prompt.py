"""Prompt-to-prompt (Hertz et al. 2022): edit a picture by editing its prompt, keeping its composition.

The prompt (source) and the edited prompt are generated together from the same seed, as a batch of two. While the
first ``cross`` fraction of the steps runs, the edited image's cross-attention is the source's, carried over to the
edited prompt's tokens by a word alignment; during the first ``self`` fraction its self-attention is the source's
too (``modules.attention`` controllers on diffusers attention processors set for the job).

- **Replace** swaps words one for one ("a red circle" → "a blue circle"); a word of several tokens receives the mean
  attention of the word it replaces.
- **Refine** adds (or drops) words ("a circle" → "a red circle"); the words both prompts share are carried over, the
  new ones attend freely.
- **Re-weight** keeps the prompt and scales the attention of some words by a factor (also usable with the others).
- **Local blend** (optional words): outside the region those words' attention covers, the edited image follows
  the source exactly (the guided prediction is blended per step).

Output: the source and the edited image side by side (first), then both images. Args, in order: edited prompt,
mode ("Replace", "Refine", "Re-weight"), cross-attention fraction, self-attention fraction, re-weighted words,
factor, local-blend words. Prompts must fit one 75-token chunk and have no ``AND``.
"""
from __future__ import annotations

import difflib
import math
from typing import Any

import gradio as gr
import torch

from modules import attention, extra_networks, prompt_parser, scripts
from modules.builtin_scripts._common import copy_processing, own_images
from modules.images import GridAnnotation, draw_grid_annotations, grid_with_margins
from modules.processing import GenerationError, Processed, StableDiffusionProcessing, fix_seed, process_images

MODES = ("Replace", "Refine", "Re-weight")
SELF_MAX_QUERIES = 32 * 32  # self-attention is injected in layers up to this grid (its probabilities grow as n²)
BLEND_THRESHOLD = 0.3  # share of the blend words' peak attention inside the edited region (the paper's value)
NAME = "Prompt-to-prompt"


class PromptToPrompt(scripts.Script):
    def title(self) -> str:
        return NAME

    def show(self, is_img2img: bool) -> bool:
        return not is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        edited = gr.Textbox("", lines=2, label="Edited prompt (empty with Re-weight: the prompt itself)",
                            elem_id=self.elem_id("edited_prompt"))
        mode = gr.Radio(list(MODES), value="Replace", label="Edit", elem_id=self.elem_id("mode"))
        with gr.Row():
            cross = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="Cross-attention injection (fraction of steps)",
                              elem_id=self.elem_id("cross"))
            self_ = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Self-attention injection (fraction of steps)",
                              elem_id=self.elem_id("self"))
        with gr.Row():
            words = gr.Textbox("", label="Re-weight words (comma-separated)", elem_id=self.elem_id("reweight_words"))
            factor = gr.Number(1.0, label="Re-weight factor (> 0)", elem_id=self.elem_id("factor"))
        blend = gr.Textbox("", label="Local blend words (empty: off)", elem_id=self.elem_id("blend_words"))
        return [edited, mode, cross, self_, words, factor, blend]

    def run(self, p: StableDiffusionProcessing, edited_prompt: str, mode: str, cross: float, self_fraction: float,
            reweight_words: str, factor: float, blend_words: str) -> Processed:
        source = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        edit = plan_edit(p.sd_model, source, edited_prompt, mode, cross, self_fraction, reweight_words, factor,
                         blend_words, p.steps)
        fix_seed(p)
        job = copy_processing(p)
        job.prompt, job.seed, job.batch_size, job.n_iter = [source, edit.edited_text], [p.seed, p.seed], 2, 1
        job.negative_prompt = p.negative_prompt[0] if isinstance(p.negative_prompt, list) else p.negative_prompt
        job.attention_controllers = [*p.attention_controllers, edit]
        job.extra_generation_params.update(edit.infotext_params())
        processed = process_images(job)
        pictures, texts = own_images(processed)
        if len(pictures) < 2:
            return processed
        pair = draw_grid_annotations(grid_with_margins(pictures[:2], 2), pictures[0].width, pictures[0].height,
                        [[GridAnnotation("source")], [GridAnnotation("edited")]], [[]])
        if p.opts.enable_pnginfo:
            pair.info["parameters"] = texts[1]
        processed.images, processed.infotexts = [pair, *pictures], [texts[1], *texts]
        processed.index_of_first_image = 1
        return processed


# ---------------------------------------------------------------------------------------------------------------------
# The edit: alignment of the two prompts and the attention controller
# ---------------------------------------------------------------------------------------------------------------------
def _single_chunk_words(model: Any, text: str, what: str, steps: int) -> list[attention.Word]:
    if len(prompt_parser.get_multicond_prompt_list([text])[1]) > 1:
        raise GenerationError(f"{NAME}: the {what} has AND parts; edit a prompt without AND")
    words = attention.prompt_words(model, attention.main_prompt_text(text, steps))
    if any(pos >= attention.CHUNK_TOKENS - 1 for w in words for pos in w.positions):
        raise GenerationError(f"{NAME}: the {what} is longer than 75 tokens (or uses BREAK); edit a shorter prompt")
    return words


def _word_list(text: str) -> list[str]:
    return [w.strip().lower() for w in (text or "").split(",") if w.strip()]


def plan_edit(model: Any, source: str, edited: str, mode: str, cross: float, self_fraction: float,
              reweight_words: str, factor: float, blend_words: str, steps: int) -> "PromptEdit":
    """Check the arguments (a ``GenerationError`` naming the one at fault) and align the prompts."""
    if mode not in MODES:
        raise GenerationError(f"{NAME}: mode must be one of {', '.join(MODES)}, not {mode!r}")
    for name, value in (("cross-attention fraction", cross), ("self-attention fraction", self_fraction)):
        if value is None or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
            raise GenerationError(f"{NAME}: the {name} must be between 0 and 1, got {value!r}")
    factor = 1.0 if factor is None else float(factor)
    if not math.isfinite(factor) or factor <= 0:
        raise GenerationError(f"{NAME}: the re-weight factor must be a positive number, got {factor!r}")
    if getattr(model, "family", "sd1") == "sdxl-refiner":
        raise GenerationError(f"{NAME}: the SDXL refiner is not supported; use a base checkpoint")
    source = extra_networks.strip_tags(source)
    edited = extra_networks.strip_tags(edited or "").strip()
    if mode == "Re-weight":
        if edited and edited != source.strip():
            raise GenerationError(f"{NAME}: Re-weight keeps the prompt; leave the edited prompt empty")
        edited = source
        if not _word_list(reweight_words) or factor == 1.0:
            raise GenerationError(f"{NAME}: Re-weight needs words to re-weight and a factor other than 1")
    if not edited:
        raise GenerationError(f"{NAME}: the edited prompt is empty")
    src_words = [w for w in _single_chunk_words(model, source, "prompt", steps) if not w.is_punctuation]
    new_words = [w for w in _single_chunk_words(model, edited, "edited prompt", steps) if not w.is_punctuation]
    matcher = difflib.SequenceMatcher(None, [w.text.lower() for w in src_words], [w.text.lower() for w in new_words],
                                      autojunk=False)
    opcodes = matcher.get_opcodes()
    if not any(tag == "equal" for tag, *_ in opcodes):
        raise GenerationError(f"{NAME}: the edited prompt shares no word with the prompt; prompt-to-prompt edits "
                              f"a prompt, it does not replace it")
    if mode == "Replace" and len(src_words) != len(new_words):
        raise GenerationError(f"{NAME}: Replace swaps words one for one, but the prompt has {len(src_words)} words "
                              f"and the edited prompt {len(new_words)}; use Refine to add or drop words")
    keys = attention.CHUNK_TOKENS
    mapper, alpha = torch.zeros(keys, keys), torch.zeros(keys)
    for tag, i0, i1, j0, j1 in opcodes:
        if tag == "equal" or (tag == "replace" and mode == "Replace"):
            for a, b in zip(src_words[i0:i1], new_words[j0:j1]):
                for k, target in enumerate(b.positions):
                    if len(a.positions) == len(b.positions):
                        mapper[a.positions[k], target] = 1.0
                    else:
                        mapper[a.positions, target] = 1.0 / len(a.positions)
                    alpha[target] = 1.0
    # BOS, EOS and padding: the same slot relative to the end of the words.
    src_end = max((pos for w in src_words for pos in w.positions), default=0)
    new_end = max((pos for w in new_words for pos in w.positions), default=0)
    mapper[0, 0], alpha[0] = 1.0, 1.0
    for target in range(new_end + 1, keys):
        mapper[min(keys - 1, max(src_end + 1, target - new_end + src_end)), target] = 1.0
        alpha[target] = 1.0
    equalizer = torch.ones(keys)
    found = {w.text.lower(): w for w in new_words}
    for word in _word_list(reweight_words):
        if word not in found:
            raise GenerationError(f"{NAME}: re-weighted word {word!r} is not in the edited prompt")
        equalizer[found[word].positions] = factor
    blend = _word_list(blend_words)
    blend_src = [pos for w in src_words if w.text.lower() in blend for pos in w.positions]
    blend_new = [pos for w in new_words if w.text.lower() in blend for pos in w.positions]
    if blend and not (blend_src or blend_new):
        raise GenerationError(f"{NAME}: none of the local blend words {', '.join(blend)} is in either prompt")
    return PromptEdit(mode, edited, mapper, alpha, equalizer, float(cross), float(self_fraction),
                      {w: factor for w in _word_list(reweight_words)}, blend, blend_src, blend_new)


class PromptEdit(attention.AttentionController):
    """Image 0 of each UNet call is the source, image 1 the edit; only the positive rows are touched."""

    def __init__(self, mode: str, edited_text: str, mapper: torch.Tensor, alpha: torch.Tensor,
                 equalizer: torch.Tensor, cross: float, self_fraction: float, weights: dict[str, float],
                 blend_words: list[str], blend_src: list[int], blend_new: list[int]) -> None:
        self.mode, self.edited_text = mode, edited_text
        self.mapper, self.alpha, self.equalizer = mapper, alpha, equalizer
        self.cross, self.self_fraction, self.weights = cross, self_fraction, weights
        self.blend_words, self.blend_src, self.blend_new = blend_words, blend_src, blend_new
        self.maps = attention.CrossAttentionRecorder()

    def wants(self, layer: attention.Layer) -> bool:
        return True

    def wants_now(self, layer: attention.Layer, call: attention.UNetCall, queries: int) -> bool:
        if not layer.is_cross:
            return queries <= SELF_MAX_QUERIES and self._injecting(call, self.self_fraction)
        return bool(self.blend_words) or self._injecting(call, self.cross) or bool((self.equalizer != 1).any())

    def _injecting(self, call: attention.UNetCall, fraction: float) -> bool:
        return call.step < round(fraction * call.total_steps)

    def edit(self, layer: attention.Layer, call: attention.UNetCall, probs: torch.Tensor) -> torch.Tensor | None:
        src, new = call.row(0), call.row(1)
        if src is None or new is None:
            return None
        if not layer.is_cross:
            if not self._injecting(call, self.self_fraction):
                return None
            probs = probs.clone()
            probs[new] = probs[src]
            return probs
        if self.blend_words:
            self.maps.edit(layer, call, probs)
        keys = probs.shape[-1]
        edited = probs[new]
        if self._injecting(call, self.cross):
            mapper, alpha = self.mapper[:keys, :keys].to(probs), self.alpha[:keys].to(probs)
            carried = torch.einsum("hqs,sk->hqk", probs[src], mapper)
            edited = alpha * carried + (1 - alpha) * edited
        edited = edited * self.equalizer[:keys].to(probs)
        probs = probs.clone()
        probs[new] = edited
        return probs

    def after_cfg(self, call: attention.UNetCall, prediction: torch.Tensor) -> torch.Tensor:
        if not self.blend_words or prediction.shape[0] < 2 or 0 not in self.maps.sums:
            return prediction
        heat = torch.zeros(prediction.shape[-2:])
        for image, positions in ((0, self.blend_src), (1, self.blend_new)):
            m = self.maps.map(image, positions) if positions else None
            if m is not None:
                heat = heat + _resize_to(m, prediction.shape[-2:]) / max(float(m.max()), 1e-8)
        heat = torch.nn.functional.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
        mask = (heat > BLEND_THRESHOLD * float(heat.max())).to(prediction)
        prediction = prediction.clone()
        prediction[1] = prediction[0] + mask * (prediction[1] - prediction[0])
        return prediction

    def infotext_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"Prompt-to-prompt": self.mode, "P2P cross-attention": self.cross,
                                  "P2P self-attention": self.self_fraction}
        if self.weights:
            params["P2P re-weight"] = ", ".join(f"{w}: {f}" for w, f in self.weights.items())
        if self.blend_words:
            params["P2P local blend"] = ", ".join(self.blend_words)
        return params


def _resize_to(m: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(m.shape) == tuple(size):
        return m
    return torch.nn.functional.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
