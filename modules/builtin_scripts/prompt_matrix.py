"""Prompt matrix: every combination of the ``|``-separated parts of the prompt, and a labelled grid of them.

``a busy city street|illustration|cinematic lighting`` gives 2² = 4 prompts: the base, base + illustration,
base + cinematic lighting, base + both. Part 0 (the base) is kept as written; the other parts are stripped of spaces
and commas, joined with ``", "`` (or ``" "``), after the base or, with "Put variable parts at start", before it.
Combination ``c`` holds part ``k+1`` when bit ``k`` of ``c`` is set. All images share the seed unless "Use different
seed for each picture" (then seed + i). The grid (image 0) has ``1 << (parts // 2)`` rows; the first half of the
parts label the columns, the rest the rows, parts not in a cell struck through.
"""
from __future__ import annotations

import math
from typing import Any

import gradio as gr
from PIL import Image

from modules import scripts
from modules.builtin_scripts._common import copy_processing, interrupted_result, own_images, save_grid
from modules.images import GridAnnotation, draw_grid_annotations, grid_with_margins
from modules.processing import GenerationError, Processed, StableDiffusionProcessing, fix_seed, process_images

DELIMITERS = {"comma": ", ", "space": " "}


def matrix_prompts(prompt: str, put_at_start: bool = False, delimiter: str = ", ") -> list[str]:
    """The 2ⁿ prompts of a prompt with n variable parts, in combination order."""
    base, *parts = prompt.split("|")
    parts = [part.strip().strip(",") for part in parts]
    prompts = []
    for combination in range(1 << len(parts)):
        chosen = [part for k, part in enumerate(parts) if combination & (1 << k)]
        prompts.append(delimiter.join([*chosen, base] if put_at_start else [base, *chosen]))
    return prompts


def matrix_labels(prompt: str) -> tuple[list[list[GridAnnotation]], list[list[GridAnnotation]]]:
    """Column and row annotations of the grid: each lists its half of the parts, active where the cell has them."""
    parts = [part.strip() for part in prompt.split("|")[1:]]
    boundary = math.ceil(len(parts) / 2)
    across, down = parts[:boundary], parts[boundary:]
    def labels(names: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, bool(combination & (1 << k))) for k, text in enumerate(names)]
                for combination in range(1 << len(names))]

    return labels(across), labels(down)


class PromptMatrix(scripts.Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list[Any]:
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(False, label="Put variable parts at start of prompt",
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(False, label="Use different seed for each picture",
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(["positive", "negative"], value="positive", label="Select prompt",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(list(DELIMITERS), value="comma", label="Select joining char",
                                                elem_id=self.elem_id("variations_delimiter"))
            with gr.Column():
                margin_size = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)",
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p: StableDiffusionProcessing, put_at_start: bool, different_seeds: bool, prompt_type: str,
            variations_delimiter: str, margin_size: float) -> Processed:
        if prompt_type not in ("positive", "negative") or variations_delimiter not in DELIMITERS:
            raise GenerationError("Prompt matrix: prompt type must be positive/negative and the joining char "
                                  "comma/space")
        field = "prompt" if prompt_type == "positive" else "negative_prompt"
        original = getattr(p, field)
        original = original[0] if isinstance(original, list) else original
        prompts = matrix_prompts(original, put_at_start, DELIMITERS[variations_delimiter])
        fix_seed(p)
        p.state.job_count = len(prompts)
        jobs = [self._job(p, field, prompts, different_seeds)] if different_seeds else \
            [self._job(p, field, [prompt], False) for prompt in prompts]
        results: list[Processed] = []
        for job in jobs:
            if p.state.interrupted:
                break
            results.append(process_images(job))
        return self._result(p, original, results, len(prompts), int(margin_size))

    @staticmethod
    def _job(p: StableDiffusionProcessing, field: str, prompts: list[str], different_seeds: bool
             ) -> StableDiffusionProcessing:
        """One ``process_images`` job: all prompts at once (seeds seed+i) or a single prompt at the seed."""
        job = copy_processing(p)
        setattr(job, field, prompts if len(prompts) > 1 else prompts[0])
        job.batch_size = math.gcd(len(prompts), p.batch_size) if different_seeds else 1
        job.n_iter = len(prompts) // job.batch_size
        job.do_not_save_grid = True
        return job

    @staticmethod
    def _result(p: StableDiffusionProcessing, original: str, results: list[Processed], count: int,
                margin: int) -> Processed:
        pictures, infotexts, files = [], [], []
        for processed in results:
            own, texts = own_images(processed)
            pictures += own
            infotexts += texts
            files += processed.files
        if not pictures:
            return interrupted_result(p)
        size = pictures[0].size
        cells = pictures + [Image.new("RGB", size) for _ in range(count - len(pictures))]
        rows = 1 << ((len(original.split("|")) - 1) // 2)
        columns, row_labels = matrix_labels(original)
        grid = draw_grid_annotations(grid_with_margins(cells, count // rows, margin), *size, columns, row_labels, margin)
        all_seeds = [s for r in results for s in r.all_seeds]
        files += save_grid(p, grid, "prompt_matrix", infotexts[0], all_seeds[0], original)
        return Processed(p=p, images=[grid, *pictures], infotexts=[infotexts[0], *infotexts], seed=all_seeds[0],
                         all_seeds=all_seeds, all_subseeds=[s for r in results for s in r.all_subseeds],
                         all_prompts=[s for r in results for s in r.all_prompts],
                         all_negative_prompts=[s for r in results for s in r.all_negative_prompts],
                         index_of_first_image=1, interrupted=p.state.interrupted, files=files)
