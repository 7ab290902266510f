"""The measured effects of attention maps, prompt-to-prompt and dynamic thresholding on the default model: what the
tests assert and ``benchmarks/bench_attention.py`` reports, measured one way.

Every function takes a loaded default model (and, for the scripts, the txt2img ``ScriptRunner``) and a list of
seeds, generates at the model's 64 px with 10 steps and CFG 6 unless said otherwise, and returns plain numbers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from modules import analyser
from modules.builtin_scripts.attention_maps import MapsRecorder, normalised, word_maps
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState

MAP_PROMPT = "a red circle on a white background"
P2P_SOURCE = "a red circle at the left on a white background"
P2P_EDITED = "a blue circle at the left on a white background"
MAP_THRESHOLD = 0.5  # a word's region: where its max-normalised map exceeds this


def job(model: Any, prompt: str, seed: int, **kw: Any) -> StableDiffusionProcessingTxt2Img:
    kw = {"steps": 10, "cfg_scale": 6, **kw}
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, seed=seed, width=model.native_size, height=model.native_size,
                                         do_not_save_samples=True, do_not_save_grid=True, **kw)
    p.sd_model, p.opts, p.state = model, Options(samples_save=False, live_previews_enable=False), JobState()
    return p


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def colour_fraction(image: Image.Image, colour: str) -> float:
    """Share of pixels nearer the palette's ``colour`` than any other palette colour."""
    px = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    distances = ((px[:, None] - analyser.PALETTE[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == analyser.PALETTE_NAMES.index(colour)).mean())


def saturated_fraction(image: Image.Image) -> float:
    """Share of pixels with a channel clipped to 0 or 255 by the decoder (burned colours)."""
    a = np.asarray(image.convert("RGB"))
    return float(((a == 0) | (a == 255)).any(-1).mean())


def saturation_at_cfg(model: Any, seeds: Sequence[int], cfg_scale: float = 20, **kw: Any) -> float:
    """Mean saturated fraction of ``MAP_PROMPT`` at ``cfg_scale`` (with ``kw``, e.g. dynamic_thresholding)."""
    return float(np.mean([saturated_fraction(process_images(job(model, MAP_PROMPT, seed, cfg_scale=cfg_scale,
                                                                    **kw)).images[0]) for seed in seeds]))


@dataclass
class MapScores:
    shape_iou: list[float]                 # IoU of the "circle" region with the object's mask, per seed
    background_peak_on_object: list[bool]  # whether the "white" map's peak lies on the object, per seed


def map_scores(model: Any, seeds: Sequence[int], layers: str = "finest") -> MapScores:
    scores = MapScores([], [])
    for seed in seeds:
        p = job(model, MAP_PROMPT, seed)
        recorder = MapsRecorder()
        p.attention_controllers.append(recorder)
        image = process_images(p).images[0]
        maps = dict(word_maps(p, recorder, 0, ["circle", "white"], False, layers, set()))
        mask = analyser.object_mask(image)
        scores.shape_iou.append(iou(normalised(maps["circle"], image.size) > MAP_THRESHOLD, mask))
        white = normalised(maps["white"], image.size)
        scores.background_peak_on_object.append(bool(mask[np.unravel_index(white.argmax(), white.shape)]))
    return scores


def p2p_args(edited: str = P2P_EDITED, mode: str = "Replace", cross: float = 0.8, self_: float = 0.4,
             words: str = "", factor: float = 1.0, blend: str = "") -> list[Any]:
    """The Prompt-to-prompt script's args in order (as the API's ``script_args``)."""
    return [edited, mode, cross, self_, words, factor, blend]


@dataclass
class ReplaceScores:
    edited_blue: list[bool]        # the edited image's object reads blue
    edited_iou: list[float]        # its object mask vs the source's
    regenerated_blue: list[bool]   # a plain generation of the edited prompt with the same seed
    regenerated_iou: list[float]


def replace_scores(model: Any, runner: Any, seeds: Sequence[int], **args: Any) -> ReplaceScores:
    scores = ReplaceScores([], [], [], [])
    for seed in seeds:
        out = runner.run_from_api(job(model, P2P_SOURCE, seed), "prompt-to-prompt", p2p_args(**args), {})
        _, source, edited = out.images[:3]
        plain = process_images(job(model, P2P_EDITED, seed)).images[0]
        mask = analyser.object_mask(source)
        scores.edited_blue.append(analyser.analyse(edited).color == "blue")
        scores.edited_iou.append(iou(mask, analyser.object_mask(edited)))
        scores.regenerated_blue.append(analyser.analyse(plain).color == "blue")
        scores.regenerated_iou.append(iou(mask, analyser.object_mask(plain)))
    return scores


def reweight_red(model: Any, runner: Any, seeds: Sequence[int], factor: float) -> list[tuple[float, float]]:
    """(red fraction of the source, of the edit with "red" re-weighted by ``factor``) per seed."""
    pairs = []
    for seed in seeds:
        args = p2p_args(edited="", mode="Re-weight", words="red", factor=factor)
        _, source, edited = runner.run_from_api(job(model, MAP_PROMPT, seed), "prompt-to-prompt", args, {}).images[:3]
        pairs.append((colour_fraction(source, "red"), colour_fraction(edited, "red")))
    return pairs
