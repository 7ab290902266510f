"""Prompts from file or textbox: one job per non-empty line.

A line containing ``--`` is read shell-style as options, e.g. ``--prompt "a red circle" --steps 10 --seed 5``
(``--prompt`` and ``--negative_prompt`` take every word up to the next option); any other line is the prompt. A
line's prompt is joined to the UI prompt with a space, before it ("start") or after it ("end"). "Iterate seed every
line" adds ``batch_size * n_iter`` to the seed after each line; "Use same random seed for all lines" draws a -1 seed
once. Every line is checked before the first image, and a bad one is reported with its number.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from modules import rng, scripts, sd_samplers
from modules.builtin_scripts._common import (copy_processing, find_checkpoint, interrupted_result, load_checkpoint,
                                             own_images, restoring_model, set_field)
from modules.processing import GenerationError, Processed, StableDiffusionProcessing, process_images

TITLE = "Prompts from file or textbox"


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("expects true or false")
    return text.lower() == "true"


def _styles(text: str) -> list[str]:
    return [style.strip() for style in text.split(",") if style.strip()]


# A1111's allowed keys and how their values are read.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": str, "outpath_samples": str, "outpath_grids": str, "prompt_for_display": str, "prompt": str,
    "negative_prompt": str, "styles": _styles, "seed": int, "subseed_strength": float, "subseed": int,
    "seed_resize_from_h": int, "seed_resize_from_w": int, "sampler_index": int, "sampler_name": str,
    "batch_size": int, "n_iter": int, "steps": int, "cfg_scale": float, "width": int, "height": int,
    "restore_faces": _boolean, "tiling": _boolean, "do_not_save_samples": _boolean, "do_not_save_grid": _boolean,
}
MULTI_WORD = ("prompt", "negative_prompt")


def parse_options(line: str) -> dict[str, Any]:
    """``--key value`` pairs of one line; raises ``ValueError`` naming the bad option."""
    tokens = shlex.split(line)
    result: dict[str, Any] = {}
    pos = 0
    while pos < len(tokens):
        token = tokens[pos]
        if not token.startswith("--"):
            raise ValueError(f"expected an --option, got {token!r}")
        key = token[2:]
        if key not in OPTIONS:
            raise ValueError(f"unknown option --{key}; allowed: {', '.join('--' + k for k in OPTIONS)}")
        words = []
        pos += 1
        while pos < len(tokens) and not tokens[pos].startswith("--") and (not words or key in MULTI_WORD):
            words.append(tokens[pos])
            pos += 1
        if not words:
            raise ValueError(f"--{key} needs a value")
        try:
            result[key] = OPTIONS[key](" ".join(words))
        except ValueError as e:
            raise ValueError(f"--{key} {' '.join(words)!r}: {e}") from None
    return result


def parse_prompt_inputs(text: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, options)`` per non-empty line (``{"prompt": line}`` for a line without options)."""
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            jobs.append((number, parse_options(line) if "--" in line else {"prompt": line}))
        except ValueError as e:
            raise GenerationError(f"{TITLE}: line {number}: {e}") from None
    return jobs


def apply_options(p: StableDiffusionProcessing, options: dict[str, Any], switch_model: bool) -> None:
    """Set a line's options on ``p`` (validated); ``sd_model`` is loaded only with ``switch_model``."""
    for key, value in options.items():
        if key == "sd_model":
            if switch_model:
                p.sd_model = load_checkpoint(value, "--sd_model")
            else:
                find_checkpoint(value, "--sd_model")
        elif key == "sampler_index":
            names = sd_samplers.visible_sampler_names()
            if not 0 <= value < len(names):
                raise GenerationError(f"--sampler_index {value} is not between 0 and {len(names) - 1}")
            p.sampler_name = names[value]
        elif key == "prompt_for_display":
            p.prompt_for_display = value
        else:
            set_field(p, key, value)


class PromptsFromFile(scripts.Script):
    def title(self) -> str:
        return TITLE

    def ui(self, is_img2img: bool) -> list[Any]:
        checkbox_iterate = gr.Checkbox(False, label="Iterate seed every line", elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(False, label="Use same random seed for all lines",
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], value="start", label="Insert prompts at the",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=2, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="filepath", file_types=[".txt"],
                         elem_id=self.elem_id("file"))

        def load(path: str | None) -> Any:
            if not path:
                return gr.update()
            return Path(path).read_text(encoding="utf-8", errors="replace")

        upload.change(load, upload, prompt_txt, show_progress="hidden")
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p: StableDiffusionProcessing, checkbox_iterate: bool, checkbox_iterate_batch: bool,
            prompt_position: str, prompt_txt: str) -> Processed:
        jobs = parse_prompt_inputs(prompt_txt or "")
        if not jobs:
            raise GenerationError(f"{TITLE}: no prompts given (one per line)")
        if prompt_position not in ("start", "end"):
            raise GenerationError(f"{TITLE}: prompt position must be start or end, got {prompt_position!r}")
        for number, options in jobs:   # every line is checked before the first image
            try:
                apply_options(copy_processing(p), options, switch_model=False)
            except GenerationError as e:
                raise GenerationError(f"{TITLE}: line {number}: {e}") from None
        if (checkbox_iterate or checkbox_iterate_batch) and int(p.seed) == -1:
            p.seed = rng.random_seed()
        p.state.job_count = sum(options.get("n_iter", p.n_iter) for _, options in jobs)
        results = []
        with restoring_model(p):
            for _, options in jobs:
                if p.state.interrupted:
                    break
                job = copy_processing(p)
                apply_options(job, options, switch_model=True)
                if options.get("prompt") and p.prompt:
                    job.prompt = f"{options['prompt']} {p.prompt}" if prompt_position == "start" else \
                        f"{p.prompt} {options['prompt']}"
                results.append(process_images(job))
                if checkbox_iterate:
                    p.seed = int(p.seed) + p.batch_size * p.n_iter
        if not results:
            return interrupted_result(p)
        pictures, infotexts = [], []
        for processed in results:
            own, texts = own_images(processed)
            pictures += own
            infotexts += texts
        return Processed(p=p, images=pictures, infotexts=infotexts, seed=results[0].seed,
                         all_seeds=[s for r in results for s in r.all_seeds],
                         all_subseeds=[s for r in results for s in r.all_subseeds],
                         all_prompts=[s for r in results for s in r.all_prompts],
                         all_negative_prompts=[s for r in results for s in r.all_negative_prompts],
                         interrupted=p.state.interrupted, files=[f for r in results for f in r.files])
