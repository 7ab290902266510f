"""X/Y/Z plot: one image per combination of up to three axes of parameter values, in a labelled grid.

Values are comma-separated (CSV quoting allowed). Numeric axes take ranges: ``1-5`` = 1,2,3,4,5; ``1-5 (+2)`` =
1,3,5; ``10-5 (-3)`` = 10,7; ``1-10 [5]`` = 5 values evenly from 1 to 10 (1,3,5,7,10); floats the same way
(``0-1 (+0.25)``, ``0-1 [5]``). Prompt S/R: the first value is searched for in the prompt and negative prompt and each
value replaces it. Prompt order: every order of the given prompt parts. Axes with a list of names (Sampler, Schedule
type, Checkpoint name) offer a dropdown unless "Use text inputs instead of dropdowns".

Every cell is a ``process_images`` of a copy of ``p`` with the axis values applied, so its infotext states them.
Seeds are fixed first (a random seed drawn once) unless "Keep -1 for seeds"; "Vary seeds for X/Y/Z" adds the cell's
index on that axis. Expensive axes (Checkpoint name) are iterated outermost, and the checkpoint that was current is
made current again afterwards. Result: the grid (one sub-grid per Z value), then the sub-grids ("Include Sub
Grids") and every cell's images ("Include Sub Images"). Extensions may append ``AxisOption``s to ``axis_options``.
"""
from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from PIL import Image

from modules import rng, scripts, sd_samplers
from modules.builtin_scripts._common import (checkpoint_titles, copy_processing, find_checkpoint,
                                             interrupted_result, load_checkpoint, own_images, restoring_model,
                                             save_grid, set_field)
from modules.images import GridAnnotation, draw_grid_annotations, grid_with_margins
from modules.processing import GenerationError, Processed, StableDiffusionProcessing, fix_seed, process_images

TITLE = "X/Y/Z plot"


def str_permutations(value: str) -> str:
    """Marks an axis whose values are every order of the given items (Prompt order)."""
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Axis options
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class AxisOption:
    label: str
    type: Callable[[str], Any]                                       # int, float, str or str_permutations
    apply: Callable[[StableDiffusionProcessing, Any, list[Any]], None]  # (p, value, all values of the axis)
    format_value: Callable[[StableDiffusionProcessing, "AxisOption", Any], str] = None  # type: ignore[assignment]
    confirm: Callable[[StableDiffusionProcessing, list[Any]], None] | None = None   # checks values without applying
    cost: float = 0.0                                                # expensive axes are iterated outermost
    choices: Callable[[], list[str]] | None = None                   # names offered in a dropdown
    is_img2img: bool | None = None                                   # None: both tabs

    def __post_init__(self) -> None:
        self.format_value = self.format_value or format_value_add_label


@dataclass
class AxisOptionTxt2Img(AxisOption):
    is_img2img: bool | None = False


@dataclass
class AxisOptionImg2Img(AxisOption):
    is_img2img: bool | None = True


def format_value_add_label(p: StableDiffusionProcessing, opt: AxisOption, value: Any) -> str:
    if isinstance(value, float):
        value = round(value, 8)
    return f"{opt.label}: {value}"


def format_value(p: StableDiffusionProcessing, opt: AxisOption, value: Any) -> str:
    return str(value)


def format_value_join_list(p: StableDiffusionProcessing, opt: AxisOption, value: Any) -> str:
    return ", ".join(value)


def format_nothing(p: StableDiffusionProcessing, opt: AxisOption, value: Any) -> str:
    return ""


def do_nothing(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    pass


def apply_field(name: str) -> Callable[[StableDiffusionProcessing, Any, list[Any]], None]:
    def apply(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
        set_field(p, name, value)
    return apply


def apply_sampler_field(name: str) -> Callable[[StableDiffusionProcessing, Any, list[Any]], None]:
    def apply(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
        try:
            sd_samplers.split_sampler_name(value)
        except ValueError as e:
            raise GenerationError(str(e)) from None
        setattr(p, name, value)
    return apply


def apply_scheduler(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    labels = schedule_labels()
    if value not in labels:
        raise GenerationError(f"unknown schedule type {value!r}; valid: {', '.join(labels)}")
    p.scheduler = value


def schedule_labels() -> list[str]:
    return [s.label for s in sd_samplers.schedulers]


def confirm_prompt(p: StableDiffusionProcessing, values: list[Any]) -> None:
    if values[0] not in p.prompt and values[0] not in p.negative_prompt:
        raise GenerationError(f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")


def apply_prompt(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    p.prompt = p.prompt.replace(values[0], value)
    p.negative_prompt = p.negative_prompt.replace(values[0], value)


def confirm_order(p: StableDiffusionProcessing, values: list[Any]) -> None:
    missing = [token for token in values[0] if token not in p.prompt]
    if missing:
        raise GenerationError(f"Prompt order: {', '.join(map(repr, missing))} not found in the prompt")


def apply_order(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    """Put the tokens of ``value`` into the prompt positions the tokens occupy, in ``value``'s order."""
    positions = sorted((p.prompt.index(token), token) for token in value)
    between, last = [], 0
    for position, token in positions:
        between.append(p.prompt[last:position])
        last = position + len(token)
    p.prompt = "".join(text + token for text, token in zip(between, value)) + p.prompt[last:]


def confirm_checkpoints(p: StableDiffusionProcessing, values: list[Any]) -> None:
    for value in values:
        find_checkpoint(value, "Checkpoint name")


def apply_checkpoint(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    p.sd_model = load_checkpoint(value, "Checkpoint name")


NOTHING = AxisOption("Nothing", str, do_nothing, format_value=format_nothing)

axis_options: list[AxisOption] = [
    NOTHING,
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value, confirm=confirm_prompt),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list,
               confirm=confirm_order),
    AxisOption("Sampler", str, apply_sampler_field("sampler_name"), format_value=format_value,
               choices=sd_samplers.visible_sampler_names),
    AxisOptionTxt2Img("Hires sampler", str, apply_sampler_field("hr_sampler_name"), format_value=format_value,
                      choices=sd_samplers.visible_sampler_names),
    AxisOption("Schedule type", str, apply_scheduler, format_value=format_value, choices=schedule_labels),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_value, confirm=confirm_checkpoints,
               cost=1.0, choices=checkpoint_titles),
    AxisOption("Clip skip", int, apply_field("clip_skip")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Eta", float, apply_field("eta")),
]


def options_for(is_img2img: bool) -> list[AxisOption]:
    return [opt for opt in axis_options if opt.is_img2img is None or opt.is_img2img == is_img2img]


# ---------------------------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------------------------
_INT = r"[+-]?\d+"
_FLOAT = r"[+-]?\d+(?:\.\d*)?"
RE_INT_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*(?:\(\s*([+-]\d+)\s*\))?\s*")
RE_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
RE_FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*(?:\(\s*([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


def split_csv(text: str) -> list[str]:
    rows = list(csv.reader([text.strip()], skipinitialspace=True)) if text.strip() else []
    return [item.strip() for item in (rows[0] if rows else []) if item.strip()]


def parse_values(opt: AxisOption, values: str | list[str]) -> list[Any]:
    """An axis's values from its text (or a dropdown's list), ranges expanded; raises ``ValueError``."""
    if opt is NOTHING:
        return [0]
    items = split_csv(values) if isinstance(values, str) else [str(v) for v in values]
    if opt.type is int:
        parsed: list[Any] = [n for item in items for n in _int_values(item)]
    elif opt.type is float:
        parsed = [n for item in items for n in _float_values(item)]
    elif opt.type is str_permutations:
        parsed = [list(order) for order in itertools.permutations(items)]
    else:
        parsed = [opt.type(item) for item in items]
    if not parsed:
        raise ValueError("no values (write them comma-separated; a range like 10-5 needs a step such as (-1))")
    return parsed


def _int_values(item: str) -> list[int]:
    if m := RE_INT_RANGE.fullmatch(item):
        start, end, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if step == 0:
            raise ValueError(f"{item!r}: the step must not be 0")
        return list(range(start, end + 1, step))
    if m := RE_INT_COUNT.fullmatch(item):
        start, end, count = int(m[1]), int(m[2]), int(m[3])
        return [int(start + (end - start) * i / (count - 1)) if count > 1 else start for i in range(count)]
    try:
        return [int(item)]
    except ValueError:
        raise ValueError(f"{item!r} is not an integer or a range like 1-5, 1-10 (+2), 1-10 [5]") from None


def _float_values(item: str) -> list[float]:
    if m := RE_FLOAT_RANGE.fullmatch(item):
        start, end, step = float(m[1]), float(m[2]), float(m[3] or 1)
        if step == 0:
            raise ValueError(f"{item!r}: the step must not be 0")
        count = math.floor((end - start) / step + 1e-9) + 1
        return [round(start + i * step, 8) for i in range(max(count, 0))]
    if m := RE_FLOAT_COUNT.fullmatch(item):
        start, end, count = float(m[1]), float(m[2]), int(m[3])
        return [round(start + (end - start) * i / (count - 1), 8) if count > 1 else start for i in range(count)]
    try:
        return [float(item)]
    except ValueError:
        raise ValueError(f"{item!r} is not a number or a range like 0-1 (+0.25), 0-1 [5]") from None


# ---------------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Axis:
    name: str              # "X", "Y" or "Z"
    option: AxisOption
    values: list[Any]
    text: str              # the values as the user gave them (for the infotext)
    vary_seeds: bool

    def label(self, p: StableDiffusionProcessing, value: Any) -> str:
        return self.option.format_value(p, self.option, value)


class XYZPlot(scripts.Script):
    def title(self) -> str:
        return TITLE

    def ui(self, is_img2img: bool) -> list[Any]:
        options = options_for(is_img2img)
        labels = [opt.label for opt in options]
        axes = []
        for name, default in (("x", labels[1]), ("y", labels[0]), ("z", labels[0])):
            with gr.Row():
                kind = gr.Dropdown(labels, value=default, type="index", label=f"{name.upper()} type",
                                   elem_id=self.elem_id(f"{name}_type"))
                values = gr.Textbox(label=f"{name.upper()} values", lines=1, elem_id=self.elem_id(f"{name}_values"))
                values_dropdown = gr.Dropdown([], value=[], multiselect=True, label=f"{name.upper()} values",
                                              visible=False, interactive=True,
                                              elem_id=self.elem_id(f"{name}_values_dropdown"))
            axes.append((kind, values, values_dropdown))
        with gr.Row():
            draw_legend = gr.Checkbox(True, label="Draw legend", elem_id=self.elem_id("draw_legend"))
            no_fixed_seeds = gr.Checkbox(False, label="Keep -1 for seeds", elem_id=self.elem_id("no_fixed_seeds"))
            vary_seeds = [gr.Checkbox(False, label=f"Vary seeds for {name}", elem_id=self.elem_id(f"vary_seeds_{name}"))
                          for name in "xyz"]
        with gr.Row():
            include_lone_images = gr.Checkbox(False, label="Include Sub Images",
                                              elem_id=self.elem_id("include_lone_images"))
            include_sub_grids = gr.Checkbox(False, label="Include Sub Grids", elem_id=self.elem_id("include_sub_grids"))
            csv_mode = gr.Checkbox(False, label="Use text inputs instead of dropdowns",
                                   elem_id=self.elem_id("csv_mode"))
        margin_size = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=self.elem_id("margin_size"))

        def select_axis(index: int | None, use_text: bool) -> tuple[Any, Any]:
            opt = options[index or 0]
            listed = opt.choices is not None and not use_text
            return gr.update(visible=not listed), gr.update(choices=opt.choices() if listed else [], value=[],
                                                            visible=listed)

        for kind, values, values_dropdown in axes:
            kind.change(select_axis, [kind, csv_mode], [values, values_dropdown], show_progress="hidden")
            csv_mode.change(select_axis, [kind, csv_mode], [values, values_dropdown], show_progress="hidden")
        return [*axes[0], *axes[1], *axes[2], draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
                *vary_seeds, margin_size, csv_mode]

    def run(self, p: StableDiffusionProcessing, x_type: int | None, x_values: str, x_values_dropdown: list[str],
            y_type: int | None, y_values: str, y_values_dropdown: list[str], z_type: int | None, z_values: str,
            z_values_dropdown: list[str], draw_legend: bool, include_lone_images: bool, include_sub_grids: bool,
            no_fixed_seeds: bool, vary_seeds_x: bool, vary_seeds_y: bool, vary_seeds_z: bool, margin_size: float,
            csv_mode: bool) -> Processed:
        if not no_fixed_seeds:
            fix_seed(p)
        options = options_for(self.is_img2img)
        x, y, z = (self._axis(p, name, options, kind, text, listed, csv_mode, no_fixed_seeds, vary)
                   for name, kind, text, listed, vary in (("X", x_type, x_values, x_values_dropdown, vary_seeds_x),
                                                          ("Y", y_type, y_values, y_values_dropdown, vary_seeds_y),
                                                          ("Z", z_type, z_values, z_values_dropdown, vary_seeds_z)))
        p.state.job_count = len(x.values) * len(y.values) * len(z.values) * p.n_iter
        results: dict[tuple[int, int, int], Processed] = {}
        loops = sorted([z, y, x], key=lambda axis: -axis.option.cost)   # expensive axes outermost
        with restoring_model(p):
            for indices in itertools.product(*(range(len(axis.values)) for axis in loops)):
                if p.state.interrupted:
                    break
                position = dict(zip((axis.name for axis in loops), indices))
                cell = (position["X"], position["Y"], position["Z"])
                results[cell] = process_images(self._cell(p, (x, y, z), cell))
        return self._result(p, (x, y, z), results, draw_legend, include_lone_images, include_sub_grids,
                            int(margin_size))

    @staticmethod
    def _axis(p: StableDiffusionProcessing, name: str, options: list[AxisOption], kind: int | None, text: str,
              listed: list[str], csv_mode: bool, keep_random_seeds: bool, vary_seeds: bool) -> Axis:
        index = 0 if kind is None else kind
        if not isinstance(index, int) or not 0 <= index < len(options):
            raise GenerationError(f"{TITLE}: {name} type: no axis number {kind!r}")
        opt = options[index]
        use_list = opt.choices is not None and not csv_mode and bool(listed or not text)   # API clients send text
        source = (listed or []) if use_list else (text or "")
        try:
            values = parse_values(opt, source)
        except ValueError as e:
            raise GenerationError(f"{TITLE}: {name} values ({opt.label}): {e}") from None
        if opt.label in ("Seed", "Var. seed") and not keep_random_seeds:
            values = [rng.random_seed() if v == -1 else v for v in values]
        check = copy_processing(p)
        try:
            if opt.confirm is not None:
                opt.confirm(check, values)
            else:
                for value in values:
                    opt.apply(check, value, values)
        except GenerationError as e:
            raise GenerationError(f"{TITLE}: {name} values ({opt.label}): {e}") from None
        shown = ", ".join(map(str, source)) if use_list else source
        return Axis(name, opt, values, shown, vary_seeds)

    @staticmethod
    def _cell(p: StableDiffusionProcessing, axes: tuple[Axis, Axis, Axis], cell: tuple[int, int, int]
              ) -> StableDiffusionProcessing:
        job = copy_processing(p)
        job.do_not_save_grid = True
        for axis, index in zip(axes, cell):
            axis.option.apply(job, axis.values[index], axis.values)
        x, y, _ = axes
        for axis, index, size in zip(axes, cell, (1, len(x.values), len(x.values) * len(y.values))):
            if axis.vary_seeds:
                job.seed = int(job.seed) + index * size
        if cell == (0, 0, 0):   # the first cell's infotext is the grid's: it names the plot
            job.extra_generation_params["Script"] = TITLE
            for axis in axes:
                if axis.option is not NOTHING:
                    job.extra_generation_params[f"{axis.name} Type"] = axis.option.label
                    job.extra_generation_params[f"{axis.name} Values"] = axis.text
                    if axis.option.label in ("Seed", "Var. seed"):
                        job.extra_generation_params[f"Fixed {axis.name} Values"] = ", ".join(map(str, axis.values))
        return job

    @staticmethod
    def _result(p: StableDiffusionProcessing, axes: tuple[Axis, Axis, Axis],
                results: dict[tuple[int, int, int], Processed], draw_legend: bool, include_lone_images: bool,
                include_sub_grids: bool, margin: int) -> Processed:
        x, y, z = axes
        if not results:
            return interrupted_result(p)
        first = results[(0, 0, 0)]
        size = first.images[0].size
        blank = Image.new("RGB", size)
        columns = [[GridAnnotation(x.label(p, v))] for v in x.values]
        rows = [[GridAnnotation(y.label(p, v))] for v in y.values]
        sub_grids, sub_infos = [], []
        for iz in range(len(z.values)):
            cells = [results[(ix, iy, iz)].images[0] if (ix, iy, iz) in results else blank
                     for iy in range(len(y.values)) for ix in range(len(x.values))]
            grid = grid_with_margins(cells, len(x.values), margin, size)
            sub_grids.append(draw_grid_annotations(grid, *size, columns, rows, margin) if draw_legend else grid)
            sub_infos.append(results[(0, 0, iz)].infotexts[0] if (0, 0, iz) in results else first.infotexts[0])
        grid = sub_grids[0]
        if len(sub_grids) > 1:
            grid = grid_with_margins(sub_grids, len(sub_grids), margin)
            if draw_legend:
                titles = [[GridAnnotation(z.label(p, v))] for v in z.values]
                grid = draw_grid_annotations(grid, *sub_grids[0].size, titles, [[GridAnnotation()]], margin)
        ordered = [results[key] for key in sorted(results, key=lambda c: (c[2], c[1], c[0]))]
        pictures, infotexts = [grid], [first.infotexts[0]]
        if include_sub_grids and len(sub_grids) > 1:
            pictures += sub_grids
            infotexts += sub_infos
        if include_lone_images:
            for processed in ordered:
                own, texts = own_images(processed)
                pictures += own
                infotexts += texts
        files = [f for processed in ordered for f in processed.files]
        files += save_grid(p, grid, "xyz_grid", first.infotexts[0], first.seed, first.prompt)
        return Processed(p=p, images=pictures, infotexts=infotexts, seed=first.seed,
                         all_seeds=[s for r in ordered for s in r.all_seeds],
                         all_subseeds=[s for r in ordered for s in r.all_subseeds],
                         all_prompts=[s for r in ordered for s in r.all_prompts],
                         all_negative_prompts=[s for r in ordered for s in r.all_negative_prompts],
                         interrupted=p.state.interrupted, files=files)
