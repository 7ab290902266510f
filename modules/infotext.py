"""Infotext: the generation parameters stored with an image, in A1111's byte layout (v1.10).

Layout (whole string stripped)::

    <prompt, may span lines>
    Negative prompt: <negative prompt>       (line left out when the negative prompt is empty)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, ...

``create_infotext`` reads these attributes of ``p`` (A1111's names; missing optional ones count as None):

- always: ``steps``, ``sampler_name``, ``cfg_scale``, ``width``, ``height``, ``subseed_strength``,
  ``seed_resize_from_w``, ``seed_resize_from_h``, ``batch_size`` (only when ``index`` is None),
  ``extra_generation_params``
- optional: ``scheduler`` (None = Automatic), ``image_cfg_scale``, ``sd_model_hash``, ``sd_model_name``,
  ``sd_vae_hash``, ``sd_vae_name``, ``clip_skip``, ``tiling``; ``denoising_strength`` when ``p`` is img2img (has
  ``init_images``) or ``enable_hr``
- ``all_negative_prompts`` when the argument is None; ``main_prompt`` / ``main_negative_prompt`` with
  ``use_main_prompt`` (falling back to the first prompt / negative prompt)

Fixed keys that only some jobs have (``ENSD``, ``Face restoration``, ``Conditional mask weight``, ``Token merging
ratio``, ``Init image hash``, ...) come from ``p.extra_generation_params`` and are written at their A1111 position.
``RNG: CPU`` is always written: our noise is A1111's CPU-RNG noise (``modules.rng``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from modules import prompt_parser, rng, sd_samplers

VERSION = "v0.1.0"

# A1111 reads the parameters line with the pattern ``\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)``
# (a key, then a JSON-quoted value or anything up to the next comma). ``find_params`` gives exactly its ``findall``
# results in linear time: the regex backtracks over every start inside a long key-like run, which took 23 s for
# 64 k characters.
_KEY_CHARS = frozenset(" -/_")
_RE_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE_PREFIX = "Negative prompt:"

# Keys A1111 inserts when an infotext lacks them (their values are what the absence meant).
_PARSE_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": sd_samplers.AUTOMATIC,
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": False,
}


# CFG rescale (modules.guidance): the key A1111's CFG Rescale extension writes; other spellings are read as it.
CFG_RESCALE_KEY, _CFG_RESCALE_ALIASES = "CFG Rescale φ", ("CFG Rescale phi", "CFG rescale")


def quote(value: Any) -> str:
    """A parameter value as written: JSON-quoted when it contains ``,``, ``:`` or a newline, else ``str(value)``."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(value, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo ``quote`` for a JSON-quoted value; anything else is returned unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def create_infotext(p: Any, all_prompts: Sequence[str], all_seeds: Sequence[int], all_subseeds: Sequence[int],
                    comments: Any = None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: Sequence[str] | None = None) -> str:
    """The infotext of one image of a job (A1111's signature; ``comments`` is accepted and unused, as in A1111)."""
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    if use_main_prompt:
        prompt = getattr(p, "main_prompt", None) or all_prompts[0]
        negative_prompt = getattr(p, "main_negative_prompt", None) or all_negative_prompts[0]
        seed, subseed = all_seeds[0], all_subseeds[0]
    else:
        prompt, negative_prompt = all_prompts[index], all_negative_prompts[index]
        seed, subseed = all_seeds[index], all_subseeds[index]

    sampler, schedule_type = _sampler_and_schedule(p)
    opts = getattr(p, "opts", None)

    def wanted(option: str) -> bool:      # A1111's add_*_to_info settings (on when there are no options)
        return bool(getattr(opts, option, True))

    clip_skip = getattr(p, "clip_skip", None)
    varied = p.subseed_strength > 0
    params: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": seed,
        "Face restoration": None,
        "Size": f"{p.width}x{p.height}",
        "Model hash": getattr(p, "sd_model_hash", None) if wanted("add_model_hash_to_info") else None,
        "Model": getattr(p, "sd_model_name", None) if wanted("add_model_name_to_info") else None,
        "FP8 weight": None,
        "Cache FP16 weight for LoRA": None,
        "VAE hash": getattr(p, "sd_vae_hash", None) if wanted("add_vae_hash_to_info") else None,
        "VAE": getattr(p, "sd_vae_name", None) if wanted("add_vae_name_to_info") else None,
        "Variation seed": subseed if varied else None,
        "Variation seed strength": p.subseed_strength if varied else None,
        "Seed resize from": (f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
                             if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0 else None),
        "Denoising strength": _denoising_strength(p),
        "Conditional mask weight": None,
        "Clip skip": clip_skip if clip_skip is not None and clip_skip > 1 else None,
        "ENSD": None,
        "Token merging ratio": None,
        "Token merging ratio hr": None,
        "Init image hash": None,
        "RNG": rng.RANDN_SOURCE,
        "Tiling": "True" if getattr(p, "tiling", None) else None,
        **p.extra_generation_params,
        "Version": VERSION if wanted("add_version_to_infotext") else None,
    }
    entries = []
    for key, value in params.items():
        if isinstance(value, list):  # one value per image of the job
            value = value[index]
        if value is not None:
            entries.append(key if key == value else f"{key}: {quote(value)}")
    negative_line = f"\n{_NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_line}\n{', '.join(entries)}".strip()


def _sampler_and_schedule(p: Any) -> tuple[str, str]:
    """Canonical sampler name and the ``Schedule type`` to write; names we do not know are written as given."""
    scheduler = getattr(p, "scheduler", None)
    try:
        sampler, _ = sd_samplers.resolve(p.sampler_name, scheduler)
    except ValueError:
        return p.sampler_name, scheduler or sd_samplers.AUTOMATIC
    return sampler, sd_samplers.infotext_schedule_type(p.sampler_name, scheduler)


def _denoising_strength(p: Any) -> float | None:
    if hasattr(p, "init_images") or getattr(p, "enable_hr", False):
        return getattr(p, "denoising_strength", None)
    return None


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def find_params(line: str) -> list[tuple[str, str]]:
    """The ``(key, raw value)`` pairs of a parameters line, as A1111's pattern finds them, in linear time."""
    found: list[tuple[str, str]] = []
    n, pos = len(line), 0
    while pos < n:
        key_start = pos
        while key_start < n and line[key_start].isspace():
            key_start += 1
        if key_start >= n or not _is_word(line[key_start]):
            pos = key_start + 1  # every start up to here reaches the same character, which cannot begin a key
            continue
        key_end = key_start + 1
        while key_end < n and (_is_word(line[key_end]) or line[key_end] in _KEY_CHARS):
            key_end += 1
        if key_end - key_start < 2 or key_end >= n or line[key_end] != ":":
            pos = key_end  # a start inside this run ends at the same place, so it fails the same way
            continue
        value_start = key_end + 1
        while value_start < n and line[value_start].isspace():
            value_start += 1
        value_end = _quoted_end(line, value_start)
        if value_end is None:  # not a JSON-quoted value followed by a comma or the end: up to the next comma
            comma = line.find(",", value_start)
            value_end = n if comma < 0 else comma
        found.append((line[key_start:key_end], line[value_start:value_end]))
        pos = value_end + 1
    return found


def _quoted_end(line: str, start: int) -> int | None:
    """End of a ``"..."`` value at ``start`` (non-empty, backslash escapes) that a comma or the line's end follows."""
    n = len(line)
    if start >= n or line[start] != '"':
        return None
    i = start + 1
    while i < n:
        ch = line[i]
        if ch == "\\":
            if i + 1 >= n or line[i + 1] == "\n":
                return None
            i += 2
        elif ch == '"':
            if i == start + 1 or (i + 1 < n and line[i + 1] != ","):
                return None
            return i + 1
        else:
            i += 1
    return None


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """An infotext as A1111's dict: ``Prompt``, ``Negative prompt`` and every parameter, values as strings.

    JSON-quoted values are unquoted, ``WxH`` values are split into ``Key-1``/``Key-2``, keys an infotext lacks get
    A1111's defaults (``Clip skip`` "1", ``RNG`` "GPU", ``Schedule type`` "Automatic", ``Emphasis`` "Original" when
    a prompt has weights, ...), and a pre-1.9 combined sampler name (``DPM++ 2M Karras``) is split into ``Sampler``
    and ``Schedule type``.
    """
    *lines, last_line = text.strip().split("\n")
    if len(find_params(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    parts = {"Prompt": "", "Negative prompt": ""}
    part = "Prompt"
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            part = "Negative prompt"  # this line and every later one
            line = line[len(_NEGATIVE_PREFIX):].strip()
        parts[part] += ("\n" if parts[part] else "") + line

    result: dict[str, Any] = dict(parts)
    for key, value in find_params(last_line):
        value = unquote(value)
        size = _RE_IMAGE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    for key, default in _PARSE_DEFAULTS.items():
        result.setdefault(key, default)
    if "Emphasis" not in result and _uses_emphasis(result["Prompt"], result["Negative prompt"]):
        result["Emphasis"] = "Original"  # weighted prompts written before the Emphasis setting existed
    if "Sampler" in result:
        _split_combined_sampler(result)
    for alias in _CFG_RESCALE_ALIASES:  # CFG rescale under the other names it was written with
        if alias in result:
            result.setdefault(CFG_RESCALE_KEY, result[alias])
    return result


def _uses_emphasis(*prompts: str) -> bool:
    return any(weight != 1.0 and text != "BREAK"
               for prompt in prompts for text, weight in prompt_parser.parse_prompt_attention(prompt))


def _split_combined_sampler(result: dict[str, Any]) -> None:
    """``Sampler: DPM++ 2M Karras`` -> ``Sampler: DPM++ 2M`` + ``Schedule type: Karras``; unknown names stay."""
    try:
        sampler, schedule = sd_samplers.split_sampler_name(result["Sampler"])
    except ValueError:
        return
    result["Sampler"] = sampler
    if schedule is not None:
        result["Schedule type"] = schedule
