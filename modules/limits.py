"""Limits that keep one job from taking the machine: pixels of any pass (hires fix included), images per job, init
images and decoded input pixels per request, prompt length in CLIP tokens, AND parts per prompt.

The values are settings (``limit_*`` in ``modules.options``), so the owner can raise them in Settings or through
``POST /options``; a request's ``override_settings`` cannot. A job over a limit raises ``LimitError`` (a
``ValueError``: the API answers 422) naming the request field and the setting, before any work is done.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable

from modules import prompt_parser
from modules.options import Options

LIMIT_KEYS = frozenset(name for name in Options.model_fields if name.startswith("limit_"))
CHARS_PER_TOKEN = 32  # longer texts are refused without tokenizing: no real prompt averages this many per token


class LimitError(ValueError):
    """A job over one of the limits; ``field`` is the request field to blame, the message names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_overrides(overrides: dict[str, Any]) -> None:
    """A request cannot lift the server's limits for itself."""
    for key in overrides:
        if key in LIMIT_KEYS:
            raise LimitError(f"override_settings.{key}", f"{key} is a server limit; it cannot be overridden per "
                                                         "request (change it in Settings)")


def check_job(p: Any, opts: Any, *, sizes: bool = True) -> None:
    """Check a processing object against ``opts``' limits (``sizes=False``: width/height are not final yet)."""
    images = p.n_iter * p.batch_size
    if images > opts.limit_images_per_job:
        raise LimitError("n_iter", f"n_iter × batch_size is {images} images; the limit is {opts.limit_images_per_job} "
                                   "(setting limit_images_per_job)")
    if sizes:
        check_pixels("width", p.width, p.height, opts)
        if getattr(p, "enable_hr", False):
            check_pixels("hr_scale", *p.hires_size(), opts, what="the hires fix pass")
    init_images = getattr(p, "init_images", None) or []
    if len(init_images) > opts.limit_init_images:
        raise LimitError("init_images", f"{len(init_images)} init images; the limit is {opts.limit_init_images} "
                                        "(setting limit_init_images)")
    for field, expanded in (("prompt", "all_prompts"), ("negative_prompt", "all_negative_prompts"),
                            ("hr_prompt", None), ("hr_negative_prompt", None)):
        texts = _texts(getattr(p, field, None)) + _texts(getattr(p, expanded, None) if expanded else None)
        check_prompts(field, texts, opts, and_parts=not field.endswith("negative_prompt"))


def check_pixels(field: str, width: int, height: int, opts: Any, what: str = "the image") -> None:
    from modules.processing import MAX_SIDE

    if max(width, height) > MAX_SIDE:
        raise LimitError(field, f"{what} would be {width}x{height}; the largest side is {MAX_SIDE}")
    if width * height > opts.limit_max_pixels:
        raise LimitError(field, f"{what} would be {width}x{height} = {width * height} pixels; the limit is "
                                f"{opts.limit_max_pixels} (setting limit_max_pixels)")


def check_prompts(field: str, texts: Iterable[str], opts: Any, *, and_parts: bool = True) -> None:
    for text in dict.fromkeys(texts):
        if and_parts:
            parts = prompt_parser.count_and_parts(text)
            if parts > opts.limit_and_parts:
                raise LimitError(field, f"{parts} AND parts; the limit is {opts.limit_and_parts} "
                                        "(setting limit_and_parts)")
        tokens = count_tokens(text, opts.limit_prompt_tokens)
        if tokens > opts.limit_prompt_tokens:
            size = f"{tokens} tokens" if tokens < 2**62 else f"far more than {opts.limit_prompt_tokens} tokens"
            raise LimitError(field, f"the prompt is {size} long; the limit is {opts.limit_prompt_tokens} "
                                    "(setting limit_prompt_tokens)")


def count_tokens(text: str, limit: int) -> int:
    """CLIP tokens of ``text`` (every SD family shares the vocabulary); a text too long to be under ``limit`` is not
    tokenized at all (returns 2**62)."""
    if len(text) > limit * CHARS_PER_TOKEN:
        return 2**62
    if not text.strip():
        return 0
    return len(_tokenizer()(text, add_special_tokens=False, verbose=False)["input_ids"])


@functools.lru_cache(maxsize=1)
def _tokenizer():
    # The submodule itself, not transformers' lazy top-level name: a request may count tokens while the model loads
    # on another thread, and two threads resolving the lazy name at once can fail with ImportError.
    from transformers.models.clip.tokenization_clip import CLIPTokenizer

    from modules.paths import CONFIGS_DIR

    return CLIPTokenizer.from_pretrained(CONFIGS_DIR / "sd15" / "tokenizer")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value or [] if isinstance(v, str)]
