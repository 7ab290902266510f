"""The image browser: the pictures in the output folders, newest first, filtered by prompt text and date, paged;
their PNG info; deleting one moves it to a trash folder inside the outputs folder.

Every path a client names is resolved (links followed) and must lie inside one of the output folders and outside the
trash, and be an image file: nothing else can be read, listed or moved. Nothing is ever removed from disk.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
TRASH_DIR_NAME = "trash"
DEFAULT_PAGE_SIZE = 24
MAX_PAGE_SIZE = 200


class BrowserError(ValueError):
    """A request the browser refuses; the message names the field and says why in a user's words."""

    def __init__(self, field: str, message: str, *, not_found: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.not_found = field, message, not_found


@dataclass(frozen=True)
class BrowserImage:
    path: Path          # resolved
    folder: str         # the sub-folder it is in, relative to its output root ("txt2img-images/2026-12-02")
    mtime: float
    size: int
    infotext: str       # A1111's "parameters" (or EXIF UserComment); "" when there is none

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def date(self) -> str:
        return dt.datetime.fromtimestamp(self.mtime).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class BrowserPage:
    images: list[BrowserImage]
    total: int          # images that match the filter
    page: int           # 1-based, clamped to the pages there are
    pages: int          # at least 1
    folders: list[str] = field(default_factory=list)   # the top-level sub-folders holding pictures (any filter)


def parse_date(value: str | None, field: str) -> dt.date | None:
    """``YYYY-MM-DD`` (or empty) as a date; a clear error naming ``field`` otherwise."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BrowserError(field, f"{value!r} is not a date; write it as YYYY-MM-DD (e.g. 2024-05-31)") from None


def read_infotext(path: Path) -> tuple[str, dict[str, str]]:
    """The image's infotext and its other text items (PNG chunks before the image data, or EXIF), without decoding
    the pixels; ``("", {})`` for a file that cannot be read."""
    from modules import images

    try:
        with Image.open(path) as im:
            geninfo, items = images.read_info_from_image(im)
    except (OSError, ValueError, SyntaxError) as e:   # PIL raises SyntaxError for some broken PNGs
        log.debug("Could not read %s: %s", path, e)
        return "", {}
    return geninfo or "", {str(k): str(v) for k, v in items.items() if isinstance(v, (str, int, float))}


class ImageBrowser:
    """``roots()`` gives the output folders to browse (called on every listing: settings may change them);
    ``trash_dir`` is where deleted pictures go (inside the outputs folder, left out of the listing)."""

    def __init__(self, roots: Callable[[], Iterable[Path]], trash_dir: Path) -> None:
        self._roots = roots
        self.trash_dir = Path(trash_dir).resolve()
        self._cache: dict[Path, tuple[int, int, str]] = {}   # path -> (mtime_ns, size, infotext)
        self._lock = threading.Lock()

    @classmethod
    def for_runtime(cls, runtime) -> "ImageBrowser":
        return cls(lambda: output_roots(runtime.paths, runtime.opts), runtime.paths.outputs_dir / TRASH_DIR_NAME)

    # -- listing ---------------------------------------------------------------------------------------------------
    def roots(self) -> list[Path]:
        """The output folders, resolved, without one that lies inside another (its pictures are listed once)."""
        resolved = []
        for root in self._roots():
            root = Path(root).resolve()
            if root not in resolved:
                resolved.append(root)
        return [r for r in resolved if not any(r != o and r.is_relative_to(o) for o in resolved)]

    def folders(self) -> list[str]:
        """The top-level sub-folders holding pictures (``txt2img-images``, ...), for the folder filter."""
        return _top_folders(self._scan())

    def list(self, *, search: str = "", date_from: str | None = None, date_to: str | None = None,
             folder: str = "", page: int = 1, page_size: int = DEFAULT_PAGE_SIZE) -> BrowserPage:
        """Pictures newest first, those whose infotext or file name contains ``search`` (any case), saved between
        ``date_from`` and ``date_to`` (inclusive, ``YYYY-MM-DD``), in ``folder`` (a sub-folder, "" for all)."""
        start, end = parse_date(date_from, "date_from"), parse_date(date_to, "date_to")
        if start and end and start > end:
            raise BrowserError("date_to", f"{end} is before date_from {start}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise BrowserError("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        needle = (search or "").strip().casefold()
        folder = (folder or "").strip().strip("/")
        matches, scanned = [], self._scan()
        for img in scanned:
            day = dt.date.fromtimestamp(img.mtime)
            if (start and day < start) or (end and day > end):
                continue
            if folder and not (img.folder == folder or img.folder.startswith(folder + "/")):
                continue
            if needle and needle not in img.infotext.casefold() and needle not in img.name.casefold():
                continue
            matches.append(img)
        matches.sort(key=lambda i: (i.mtime, i.path.name), reverse=True)
        pages = max(1, -(-len(matches) // page_size))
        page = min(max(1, int(page)), pages)
        return BrowserPage(matches[(page - 1) * page_size: page * page_size], len(matches), page, pages,
                           _top_folders(scanned))

    def _scan(self) -> list[BrowserImage]:
        found: list[BrowserImage] = []
        seen: set[Path] = set()
        live: set[Path] = set()
        for root in self.roots():
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):   # links to folders are not followed
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames
                                     if not d.startswith(".") and (here / d).resolve() != self.trash_dir)
                for name in filenames:
                    path = here / name
                    if path.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    try:
                        real = path.resolve()
                        if real in seen or not self._inside(real, [root]):   # a link leading out is left out
                            continue
                        st = real.stat()
                    except OSError:
                        continue
                    seen.add(real)
                    live.add(real)
                    rel = here.relative_to(root).as_posix()
                    found.append(BrowserImage(real, "" if rel == "." else rel, st.st_mtime, st.st_size,
                                              self._infotext(real, st)))
        with self._lock:   # forget files that are gone
            for gone in set(self._cache) - live:
                del self._cache[gone]
        return found

    def _infotext(self, path: Path, st: os.stat_result) -> str:
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[:2] == key:
            return cached[2]
        text, _ = read_infotext(path)
        with self._lock:
            self._cache[path] = (*key, text)
        return text

    # -- one picture -----------------------------------------------------------------------------------------------
    def resolve(self, path: str | Path, field: str = "path") -> Path:
        """The picture ``path`` names (absolute, or relative to the first output folder), resolved; refused unless
        it is an image file inside an output folder and not in the trash."""
        raw = str(path or "").strip()
        if not raw:
            raise BrowserError(field, "no picture given")
        if "\x00" in raw:
            raise BrowserError(field, "the path contains a NUL character")
        roots = self.roots()
        if not roots:
            raise BrowserError(field, "there is no output folder", not_found=True)
        candidate = Path(raw) if Path(raw).is_absolute() else roots[0] / raw
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):   # a loop of links
            raise BrowserError(field, f"{raw!r} cannot be resolved") from None
        if not self._inside(real, roots):
            raise BrowserError(field, f"{raw!r} is not inside the output folders; only pictures there can be "
                                      "shown or deleted")
        if real == self.trash_dir or real.is_relative_to(self.trash_dir):
            raise BrowserError(field, f"{raw!r} is already in the trash folder")
        if real.suffix.lower() not in IMAGE_SUFFIXES:
            raise BrowserError(field, f"{raw!r} is not a picture ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not real.is_file():
            raise BrowserError(field, f"{raw!r} does not exist (deleted or moved?)", not_found=True)
        return real

    def info(self, path: str | Path) -> tuple[Path, str, dict[str, str]]:
        """``(resolved path, infotext, other text items)`` of one picture."""
        real = self.resolve(path)
        text, items = read_infotext(real)
        return real, text, items

    def move_to_trash(self, path: str | Path) -> Path:
        """Move the picture (and a ``.txt`` of the same name beside it, A1111's caption file) into the trash
        folder, keeping its sub-folder; returns where it went. Nothing is deleted."""
        real = self.resolve(path)
        root = next(r for r in self.roots() if real.is_relative_to(r))
        relative = real.relative_to(root)
        if root != self.trash_dir.parent:   # an output folder elsewhere: keep its name apart
            relative = Path(root.name) / relative
        target = _free_name(self.trash_dir / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(real), str(target))
        caption = real.with_suffix(".txt")
        if caption.is_file() and not caption.is_symlink() and self._inside(caption.resolve(), [root]):
            shutil.move(str(caption), str(_free_name(target.with_suffix(".txt"))))
        with self._lock:
            self._cache.pop(real, None)
        log.info("Moved %s to the trash: %s", real, target)
        return target

    def _inside(self, path: Path, roots: Iterable[Path]) -> bool:
        return any(path.is_relative_to(r) for r in roots)


def _top_folders(images: list[BrowserImage]) -> list[str]:
    return sorted({img.folder.split("/", 1)[0] for img in images if img.folder})


def _free_name(path: Path) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``... if it is taken."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def output_roots(paths, opts) -> list[Path]:
    """The outputs folder of the data dir and the configured output folders (A1111's ``outdir_*`` settings) that
    lie inside the data dir or an ``--allowed-output-dirs`` folder."""
    roots = [paths.outputs_dir.resolve()]
    for name in ("outdir_samples", "outdir_grids", "outdir_txt2img_samples", "outdir_img2img_samples",
                 "outdir_extras_samples", "outdir_txt2img_grids", "outdir_img2img_grids"):
        directory = getattr(opts, name, "")
        if not directory:
            continue
        try:
            roots.append(paths.confine(directory, name))
        except ValueError:
            continue
    return roots
