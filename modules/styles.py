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
        self.error: str | None = None
        self._loaded_stat: tuple[int, int] | None = None
        self.reload()

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self) -> None:
        """Read the file again. A file that cannot be read keeps the styles read before; ``error`` says why (and
        is cleared by the next good read)."""
        stat = self._stat()
        styles: dict[str, PromptStyle] = {}
        if stat is not None:
            try:
                styles = read_styles_file(self.path)
            except (OSError, UnicodeDecodeError, csv.Error, ValueError) as error:
                self.error = f"{self.path.name} could not be read, the styles read before are kept: {error}"
                log.error("styles: %s", self.error)
                self._loaded_stat = stat
                return
        self._loaded_stat = stat
        self.styles = styles
        self.error = None

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

    def save_style(self, name: str, prompt: str = "", negative_prompt: str = "") -> PromptStyle:
        """Add style ``name`` or replace its texts, and write the file (the style editor's Save). Changes made to the
        file on disk since it was read are read first, so they are kept."""
        name = check_style_name(name)
        self._refuse_if_unreadable()
        style = PromptStyle(name, prompt or "", negative_prompt or "")
        self.styles = {**self.styles, name: style}
        self.save_styles()
        return style

    def delete_style(self, name: str) -> None:
        """Remove style ``name`` and write the file; ``KeyError`` saying so when there is none."""
        self._refuse_if_unreadable()
        if name not in self.styles:
            raise KeyError(f"there is no style {name!r}")
        self.styles = {key: value for key, value in self.styles.items() if key != name}
        self.save_styles()

    def _refuse_if_unreadable(self) -> None:
        self.reload_if_changed()
        if self.error:
            raise ValueError(f"{self.error}; fix or remove the file before saving styles (it is not overwritten)")

    def api_listing(self) -> list[dict[str, str]]:
        """``/sdapi/v1/prompt-styles``: ``[{name, prompt, negative_prompt}]`` in file order."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in self.styles.values()]


def check_style_name(name: Any) -> str:
    """A style's name as saved: trimmed, not empty, one line."""
    text = str(name or "").strip()
    if not text:
        raise ValueError("name: a style needs a name")
    if "\n" in text or "\r" in text:
        raise ValueError("name: a style's name is one line")
    return text


def read_styles_file(path: Path) -> dict[str, PromptStyle]:
    """The styles of one CSV file; ``ValueError`` for a file that has no ``name`` column or is not text."""
    styles: dict[str, PromptStyle] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        fields = [name.strip() for name in reader.fieldnames or []]
        if fields and "name" not in fields:
            raise ValueError(f"the first line names the columns {', '.join(fields)!s}; a 'name' column is needed")
        for row in reader:
            style = _style_from_row(row)
            if style is not None:
                styles[style.name] = style
    return styles


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
