"""Prompt styles: named prompt / negative-prompt snippets kept in ``styles.csv`` (A1111's file format and names).

``styles.csv`` has the columns ``name, prompt, negative_prompt`` (files from before A1111 had negative prompts use
``text`` for the prompt). A style's text containing ``{prompt}`` has the user's prompt put in its place; any other
style text is appended to the prompt with ``", "``. Styles are applied in the order they are selected, at the start
of a job, to every prompt and negative prompt of the job; the infotext keeps the styled prompts, as in A1111.
"""
from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROMPT_PLACEHOLDER = "{prompt}"
CSV_FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """``style_prompt`` with ``prompt`` in place of ``{prompt}``, else both joined with ", " (empty parts left out).

    >>> merge_prompts("photo of {prompt}, 4k", "a cat")
    'photo of a cat, 4k'
    >>> merge_prompts("4k", "a cat")
    'a cat, 4k'
    """
    if PROMPT_PLACEHOLDER in style_prompt:
        return style_prompt.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


class StyleDatabase:
    """The styles of one CSV file, by name. A missing file is an empty database; a broken one is logged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.styles: dict[str, PromptStyle] = {}
        self._loaded_stat: tuple[int, int] | None = None
        self.reload()

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self) -> None:
        """Read the file again."""
        self._loaded_stat = self._stat()
        styles: dict[str, PromptStyle] = {}
        if self._loaded_stat is not None:
            try:
                with self.path.open(encoding="utf-8-sig", newline="") as f:
                    for row in csv.DictReader(f, skipinitialspace=True):
                        style = _style_from_row(row)
                        if style is not None:
                            styles[style.name] = style
            except (OSError, UnicodeDecodeError, csv.Error) as error:
                log.error("styles: cannot read %s: %s", self.path, error)
        self.styles = styles

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed on disk since it was read; returns whether it did."""
        if self._stat() == self._loaded_stat:
            return False
        self.reload()
        return True

    def get_style_prompts(self, styles: Iterable[str]) -> list[str]:
        return [self.styles[name].prompt for name in styles if name in self.styles]

    def get_negative_style_prompts(self, styles: Iterable[str]) -> list[str]:
        return [self.styles[name].negative_prompt for name in styles if name in self.styles]

    def apply_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """``prompt`` with the prompts of the named styles applied in order; unknown names are ignored."""
        for style_prompt in self.get_style_prompts(styles):
            prompt = merge_prompts(style_prompt, prompt)
        return prompt

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """``prompt`` with the negative prompts of the named styles applied in order; unknown names are ignored."""
        for style_prompt in self.get_negative_style_prompts(styles):
            prompt = merge_prompts(style_prompt, prompt)
        return prompt

    def save_styles(self, path: Path | None = None) -> None:
        """Write all styles to ``path`` (default: the database's file), replacing it atomically."""
        path = path or self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".styles-", suffix=".csv")
        try:
            with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                writer.writeheader()
                for style in self.styles.values():
                    writer.writerow({"name": style.name, "prompt": style.prompt,
                                     "negative_prompt": style.negative_prompt})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if path == self.path:
            self._loaded_stat = self._stat()

    def api_listing(self) -> list[dict[str, str]]:
        """``/sdapi/v1/prompt-styles``: ``[{name, prompt, negative_prompt}]`` in file order."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in self.styles.values()]


def _style_from_row(row: dict[str, Any]) -> PromptStyle | None:
    name = (row.get("name") or "").strip()
    if not name:
        return None
    prompt = row.get("prompt") if "prompt" in row else row.get("text")
    return PromptStyle(name, prompt or "", row.get("negative_prompt") or "")


def apply_styles(p: Any) -> None:
    """Apply ``p.styles`` to every prompt and negative prompt of the job (``p.all_prompts``, ...).

    The database is ``p.prompt_resources.styles``; style names it does not have are listed in ``p.comments``.
    """
    if not p.styles:
        return
    database: StyleDatabase | None = getattr(p.prompt_resources, "styles", None)
    known = database.styles if database is not None else {}
    for name in p.styles:
        if name not in known:
            p.comments[f"Style not found: {name}"] = 1
    if database is None:
        return
    p.all_prompts = [database.apply_styles_to_prompt(prompt, p.styles) for prompt in p.all_prompts]
    p.all_negative_prompts = [database.apply_negative_styles_to_prompt(prompt, p.styles)
                              for prompt in p.all_negative_prompts]
