"""A1111's ``modules.cache``: named JSON caches in the data dir's ``cache.json`` (the file the app keeps its hashes
in, under ``"hashes"``), and ``cached_data_for_file`` for values computed from a file."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

_lock = threading.Lock()


def _cache_file() -> Path:
    from modules import shared

    rt = shared.runtime
    if rt is not None:
        return rt.paths.cache_file
    from modules.paths import Paths

    return Paths.from_args().cache_file


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def dump_cache() -> None:
    """Nothing is held back: ``cache()`` sections are written on every change (``_write``)."""


def _write(subsection: str, values: dict[str, Any], path: Path) -> None:
    with _lock:
        data = _read(path)
        data[subsection] = values
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


class _Section(dict):
    """One section of cache.json; a change is written at once."""

    def __init__(self, name: str, values: dict[str, Any], path: Path) -> None:
        super().__init__(values)
        self.name, self.path = name, path

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        _write(self.name, dict(self), self.path)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        _write(self.name, dict(self), self.path)


def cache(subsection: str, path: Path | None = None) -> dict[str, Any]:
    """The section ``subsection`` of ``cache.json`` (the running app's, or ``path``); assigning a key saves it."""
    path = path or _cache_file()
    section = _read(path).get(subsection)
    return _Section(subsection, section if isinstance(section, dict) else {}, path)


def cached_data_for_file(subsection: str, title: str, filename: str, func: Callable[[], Any]) -> Any:
    """``func()`` for ``filename``, computed again only when the file's modification time changed."""
    existing = cache(subsection)
    mtime = os.path.getmtime(filename)
    entry = existing.get(title)
    if isinstance(entry, dict) and entry.get("mtime", 0) >= mtime:
        return entry.get("value")
    value = func()
    if value is not None:
        existing[title] = {"mtime": mtime, "value": value}
    return value
