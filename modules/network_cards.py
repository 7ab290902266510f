"""What the extra-networks cards show and change: the files of each kind (textual-inversion embeddings, checkpoints,
LoRA, hypernetworks), their preview pictures and A1111's user metadata ``.json`` beside each file.

A card is found by its page and name only (``Cards.find("lora", "x")``), from a listing of the page's folders: a name
from the page is never turned into a path, so it cannot point outside the models folders. What is written (the
``.json`` and ``.preview.png`` beside a file) goes next to the listed file, inside its folder, never through a link.

User metadata, as A1111 keeps it (``name.json`` beside ``name.safetensors``): ``description``, ``activation text``,
``preferred weight`` (0 = the ``extra_networks_default_multiplier`` setting), ``negative text``, ``notes``; other keys
in the file are kept when it is saved. Previews: ``name.preview.png`` (or ``.jpg``/``.jpeg``/``.webp``/``.gif``),
else ``name.png`` (or the other picture types) beside the file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from modules.runtime import Runtime

log = logging.getLogger(__name__)

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
HYPERNETWORK_SUFFIXES = (".pt", ".safetensors")
METADATA_TEXT_FIELDS = ("description", "activation text", "negative text", "notes")
MAX_METADATA_BYTES = 1 << 20
"""A user-metadata file larger than this is not read (it is a note, not data)."""


class CardError(ValueError):
    """A request about a card that cannot be done; the message is for the user."""


@dataclass
class Card:
    """One file (or diffusers folder) shown as a card."""

    page: str            # "lora", "textual_inversion", "checkpoints", "hypernetworks"
    name: str            # unique within the page; what the page sends back
    filename: Path       # the listed file, as listed (links not followed)
    root: Path           # the page's folder it was found in
    kind_tag: str = ""   # "lora" / "hypernet": the card adds <kind_tag:name:weight>; "" adds the name (embeddings)
    title: str = ""      # checkpoints: the title to switch to
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        """The file's path without its extension (a folder's whole path): ``base.json``, ``base.preview.png``."""
        return self.filename if self.filename.is_dir() else self.filename.with_suffix("")

    @property
    def metadata_path(self) -> Path:
        return self.base.with_name(self.base.name + ".json")

    @property
    def preview_target(self) -> Path:
        return self.base.with_name(self.base.name + ".preview.png")

    def preview(self) -> Path | None:
        """The card's picture, if there is one."""
        stem = self.base.name
        for middle in (".preview", ""):
            for suffix in PREVIEW_SUFFIXES:
                candidate = self.base.with_name(stem + middle + suffix)
                if candidate.is_file() and _inside(candidate, self.root):
                    return candidate
        return None

    def stat(self) -> os.stat_result | None:
        try:
            return self.filename.stat()
        except OSError:
            return None

    def weight(self, default_multiplier: float) -> float:
        preferred = _number(self.metadata.get("preferred weight"))
        return preferred if preferred else default_multiplier

    def prompt(self, default_multiplier: float) -> str:
        """What clicking the card adds to the prompt: the tag (or the embedding's name), then the activation text."""
        if self.kind_tag:
            text = f"<{self.kind_tag}:{self.name}:{_format_weight(self.weight(default_multiplier))}>"
        else:
            text = self.name
        activation = str(self.metadata.get("activation text") or "").strip()
        return f"{text} {activation}" if activation and self.kind_tag else text

    def negative_prompt(self) -> str:
        return str(self.metadata.get("negative text") or "").strip() if self.kind_tag else ""

    def search_text(self) -> str:
        relative = _relative(self.filename, self.root)
        return " ".join([self.name, relative, str(self.metadata.get("description") or ""),
                         str(self.metadata.get("activation text") or "")]).lower()


def _format_weight(value: float) -> str:
    return f"{value:g}"


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _inside(path: Path, root: Path) -> bool:
    """``path`` (links followed) lies inside ``root`` (links followed)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------------
# user metadata
# ---------------------------------------------------------------------------------------------------------------------
def read_user_metadata(path: Path) -> dict[str, Any]:
    """A1111's user-metadata file ``path``: a JSON object, else nothing (a broken file is logged, never fatal)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_METADATA_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("extra networks: cannot read the user metadata %s: %s", path, error)
        return {}
    return data if isinstance(data, dict) else {}


def clean_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """The editor's fields as they are stored: texts as text, ``preferred weight`` a finite number (0 = default)."""
    cleaned: dict[str, Any] = {}
    for key in METADATA_TEXT_FIELDS:
        if key in values:
            value = values[key]
            cleaned[key] = "" if value is None else str(value)
    if "preferred weight" in values:
        raw = values["preferred weight"]
        try:
            weight = float(raw if raw not in (None, "") else 0)
        except (TypeError, ValueError):
            raise CardError(f"preferred weight: {raw!r} is not a number") from None
        if not math.isfinite(weight) or not -10 <= weight <= 10:
            raise CardError(f"preferred weight: {raw!r} must be a number between -10 and 10 (0 = the default)")
        cleaned["preferred weight"] = weight
    return cleaned


def _safe_target(card: Card, target: Path) -> Path:
    """``target`` (a file beside the card's file) when writing it stays inside the card's folder and is no link."""
    if not _inside(target.parent, card.root):
        raise CardError(f"{card.name}: its folder is outside {card.root}; nothing is written there")
    if target.is_symlink():
        raise CardError(f"{target.name} is a link; it is not overwritten")
    return target


def _write_atomically(target: Path, write: Callable[[Any], None], binary: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_user_metadata(card: Card, values: dict[str, Any]) -> dict[str, Any]:
    """Write the editor's fields into the card's ``.json`` (other keys kept); returns what the file now holds."""
    target = _safe_target(card, card.metadata_path)
    data = read_user_metadata(target) | clean_metadata(values)
    _write_atomically(target, lambda f: json.dump(data, f, indent=4, ensure_ascii=False), binary=False)
    card.metadata = data
    return data


def save_preview(card: Card, image: "Image.Image") -> Path:
    """Write ``image`` as the card's ``name.preview.png`` (replacing the one there)."""
    target = _safe_target(card, card.preview_target)
    picture = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    _write_atomically(target, lambda f: picture.save(f, format="PNG"), binary=True)
    return target


# ---------------------------------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    id: str         # A1111's element-id part: txt2img_<id>_cards
    title: str      # the tab's label


TEXTUAL_INVERSION = Page("textual_inversion", "Textual Inversion")
CHECKPOINTS = Page("checkpoints", "Checkpoints")
LORA = Page("lora", "Lora")
HYPERNETWORKS = Page("hypernetworks", "Hypernetworks")


def hypernetworks_dir(runtime: "Runtime") -> Path:
    return runtime.paths.data_dir / "models" / "hypernetworks"


def pages(runtime: "Runtime") -> list[Page]:
    """The pages in A1111's order; Hypernetworks only when its folder exists."""
    found = [TEXTUAL_INVERSION]
    if hypernetworks_dir(runtime).is_dir():
        found.append(HYPERNETWORKS)
    return [*found, CHECKPOINTS, LORA]


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                  key=lambda p: str(p).lower())


def _list(runtime: "Runtime", page: str) -> list[Card]:
    if page == TEXTUAL_INVERSION.id:
        root = runtime.paths.embeddings_dir
        return [Card(page, path.stem, path, root) for path in _files(root, EMBEDDING_SUFFIXES)]
    if page == HYPERNETWORKS.id:
        root = hypernetworks_dir(runtime)
        return [Card(page, path.stem, path, root, kind_tag="hypernet") for path in _files(root, HYPERNETWORK_SUFFIXES)]
    if page == LORA.id:
        root = runtime.paths.lora_dir
        return [Card(page, lora.name, lora.path, root, kind_tag="lora") for lora in runtime.loras.loras()]
    if page == CHECKPOINTS.id:
        root = runtime.paths.ckpt_dir
        return [Card(page, os.path.splitext(info.name)[0], Path(info.filename), root, title=info.title)
                for info in runtime.models.list_checkpoints()]
    raise CardError(f"no extra-networks page {page!r}")


class Cards:
    """The cards of every page, listed once and again on ``refresh`` (or when a name is not found)."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._cards: dict[str, dict[str, Card]] = {}

    def refresh(self, rescan_models: bool = True) -> None:
        """Scan the folders again: new files appear, removed ones go (LoRA, checkpoints and embeddings alike)."""
        if rescan_models:
            self.runtime.loras.refresh()
            self.runtime.models.refresh()
            self.runtime.embeddings.refresh()
        with self._lock:
            self._cards = {}

    def list(self, page: str) -> list[Card]:
        with self._lock:
            cached = self._cards.get(page)
        if cached is None:
            cards = _list(self.runtime, page)
            for card in cards:
                card.metadata = read_user_metadata(card.metadata_path)
            cached = {card.name: card for card in cards}
            with self._lock:
                self._cards[page] = cached
        return list(cached.values())

    def find(self, page: str, name: str) -> Card:
        """The card ``name`` of ``page``; ``CardError`` (saying so) when there is none."""
        if not isinstance(name, str) or not name:
            raise CardError("no card named")
        for attempt in range(2):
            card = {c.name: c for c in self.list(page)}.get(name)
            if card is not None:
                return card
            if attempt == 0:
                with self._lock:
                    self._cards.pop(page, None)
        title = next((p.title for p in (TEXTUAL_INVERSION, CHECKPOINTS, LORA, HYPERNETWORKS) if p.id == page), page)
        raise CardError(f"{title}: there is no {name!r} (press Refresh to read the folders again)")

    def sorted(self, page: str, sort: str = "Name", reverse: bool = False) -> list[Card]:
        cards = self.list(page)

        def mtime(card: Card) -> float:
            stat = card.stat()
            return stat.st_mtime if stat else 0.0

        def ctime(card: Card) -> float:
            stat = card.stat()
            return stat.st_ctime if stat else 0.0

        keys: dict[str, Callable[[Card], Any]] = {
            "Name": lambda c: c.name.lower(),
            "Path": lambda c: _relative(c.filename, c.root).lower(),
            "Date modified": lambda c: -mtime(c),
            "Date created": lambda c: -ctime(c),
        }
        return sorted(cards, key=keys.get(sort, keys["Name"]), reverse=bool(reverse))


SORT_CHOICES = ["Name", "Path", "Date modified", "Date created"]
