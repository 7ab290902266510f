"""Extra networks (A1111's name for what a prompt pulls in besides its words): ``<name:args>`` tags and textual
inversion embeddings.

Tags match ``<(\\w+):([^>]+)>``, e.g. ``<lora:add_detail:0.8>``. ``parse_prompts`` removes them from a batch's
prompts before encoding; ``activate`` hands each kind's tags to the ``ExtraNetwork`` registered for it (LoRA:
``modules.lora``), which applies them to the model for what follows; ``deactivate`` returns the model to its base
behaviour at the end of the job. A tag of a kind nothing handles is listed in ``p.comments`` ("Skipping unknown extra
network: x") and otherwise ignored. As in A1111 only positive prompts are parsed (a tag in a negative prompt is
text), a batch uses the networks of its first prompt, and the infotext keeps the tags in the prompt.

Textual-inversion embeddings: ``EmbeddingLibrary`` keeps the embeddings folder loaded for one model and reloads it
when the model or the folder's files change; a job encodes through an ``EmbeddingUsage``, which remembers the
embeddings the prompts used and writes their ``TI hashes`` (12 hex digits of the file's SHA-256, as A1111).

``PromptResources`` bundles what a job has of all this, plus the style database; ``Runtime.prepare`` attaches one to
``p`` as ``p.prompt_resources``.
"""
from __future__ import annotations

import logging
import re
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.conditioning import Embedding
from modules.sd_models import sha256_of_file
from modules.textual_inversion import EMBEDDING_SUFFIXES, EmbeddingDatabase, read_embedding_file

if TYPE_CHECKING:
    from modules.styles import StyleDatabase

log = logging.getLogger(__name__)

EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
SHORT_HASH_LENGTH = 12
"""``Lora hashes`` / ``TI hashes`` infotext values are ``name: <12 hex digits>`` entries joined with ", "."""
_NAME_SYMBOLS = str.maketrans("", "", ":,")  # removed from names in hash lists, which they would break


# --------------------------------------------------------------------------------------------------------------------
# Tags


@dataclass
class ExtraNetworkParams:
    """The arguments of one tag split on ":": ``<lora:x:0.5:te=1>`` -> items ``["x", "0.5", "te=1"]``,
    positional ``["x", "0.5"]``, named ``{"te": "1"}`` (an item with exactly one "=" is named)."""

    items: list[str]
    positional: list[str] = field(init=False)
    named: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.positional, self.named = [], {}
        for item in self.items:
            key, sep, value = item.partition("=")
            if sep and "=" not in value:
                self.named[key] = value
            else:
                self.positional.append(item)


NetworkData = dict[str, list[ExtraNetworkParams]]
"""Tag arguments by network kind (``"lora"``), in prompt order."""


def parse_prompt(prompt: str) -> tuple[str, NetworkData]:
    """``prompt`` without its tags, and the tags' arguments.

    >>> parse_prompt("a cat <lora:fluffy:0.8>")
    ('a cat ', {'lora': [ExtraNetworkParams(items=['fluffy', '0.8'], positional=['fluffy', '0.8'], named={})]})
    """
    found: NetworkData = {}

    def take(match: re.Match[str]) -> str:
        found.setdefault(match[1], []).append(ExtraNetworkParams(match[2].split(":")))
        return ""

    return EXTRA_NETWORK_TAG.sub(take, prompt), found


def parse_prompts(prompts: Sequence[str]) -> tuple[list[str], NetworkData]:
    """Every prompt without its tags, and the tags of the first prompt (A1111: one set of networks per batch)."""
    parsed = [parse_prompt(prompt) for prompt in prompts]
    return [text for text, _ in parsed], (parsed[0][1] if parsed else {})


def strip_tags(prompt: str) -> str:
    """``prompt`` without its extra-network tags (what the token counter counts)."""
    return EXTRA_NETWORK_TAG.sub("", prompt)


# --------------------------------------------------------------------------------------------------------------------
# Networks


class ExtraNetwork(ABC):
    """A kind of network that tags activate (A1111's ``extra_networks.ExtraNetwork``); ``name`` is the tag's kind."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        """Make exactly the networks of ``params_list`` active on ``p.sd_model`` (an empty list: none of them).

        Called for every batch (and a hires pass with its own prompt) before the prompts are encoded. Problems with
        single tags (a missing file, a bad weight) go to ``p.comments``, never an exception.
        """

    @abstractmethod
    def deactivate(self, p: Any) -> None:
        """Return ``p.sd_model`` to its base behaviour; called once when the job ends, however it ends."""


@dataclass(frozen=True)
class PromptResources:
    """What a job's prompts can use besides words: styles, the model's embeddings, extra networks by kind."""

    styles: StyleDatabase | None = None
    embeddings: LoadedEmbeddings | None = None
    networks: Mapping[str, ExtraNetwork] = field(default_factory=dict)


def _networks(p: Any) -> Mapping[str, ExtraNetwork]:
    return p.prompt_resources.networks if p.prompt_resources is not None else {}


def comment(p: Any, text: str) -> None:
    """Report ``text`` with the job's results (A1111's ``p.comment``; shown next to the infotext, not in it)."""
    p.comments[text] = 1


def activate(p: Any, data: NetworkData) -> None:
    """Activate the networks the batch's tags name; tags of unknown kinds are reported in ``p.comments``."""
    networks = _networks(p)
    for kind in data:
        if kind not in networks:
            comment(p, f"Skipping unknown extra network: {kind}")
    for kind, network in networks.items():
        network.activate(p, data.get(kind, []))


def deactivate(p: Any) -> None:
    """End of the job: every network returns ``p.sd_model`` to its base behaviour."""
    for network in _networks(p).values():
        network.deactivate(p)


def add_hashes(p: Any, key: str, hashes: Mapping[str, str | None]) -> None:
    """Add ``name: hash`` entries to the infotext value ``p.extra_generation_params[key]`` ("Lora hashes",
    "TI hashes"); entries already there (earlier batches, the negative prompt, a hires pass) are kept, names
    without a hash (an unreadable file) are left out."""
    hashes = {name: value for name, value in hashes.items() if value}
    if not hashes:
        return
    entries = dict(entry.rpartition(": ")[::2] for entry in p.extra_generation_params.get(key, "").split(", ")
                   if ": " in entry)
    entries.update({name.translate(_NAME_SYMBOLS): value for name, value in hashes.items()})
    p.extra_generation_params[key] = ", ".join(f"{name}: {value}" for name, value in entries.items())


class FileHashes:
    """Hashes of files (``compute(path)``), remembered while a file's size and modification time are unchanged."""

    def __init__(self, compute: Callable[[Path], str]) -> None:
        self._compute = compute
        self._known: dict[Path, tuple[int, int, str]] = {}

    def __call__(self, path: Path) -> str | None:
        """The file's hash; None when it cannot be read (removed since it was loaded, ...)."""
        try:
            stat = path.stat()
            known = self._known.get(path)
            if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
                return known[2]
            value = self._compute(path)
        except OSError as error:
            log.warning("cannot hash %s: %s", path, error)
            return None
        self._known[path] = (stat.st_mtime_ns, stat.st_size, value)
        return value


# --------------------------------------------------------------------------------------------------------------------
# Textual-inversion embeddings


@dataclass
class LoadedEmbeddings:
    """The embeddings of a folder loaded for one model; an ``EmbeddingLookup`` for ``modules.conditioning``."""

    database: EmbeddingDatabase
    files: dict[str, Path]
    """Trigger word -> file, for the loaded embeddings."""
    errors: dict[str, str]
    """Files that could not be read (path relative to the folder) -> why; they are left out."""
    hashes: FileHashes

    def find(self, tokens: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        return self.database.find(tokens, offset)

    def short_hash(self, name: str) -> str | None:
        """A1111's ``TI hashes`` value: the first 12 hex digits of the SHA-256 of the embedding's whole file."""
        value = self.hashes(self.files[name])
        return value[:SHORT_HASH_LENGTH] if value else None


class EmbeddingLibrary:
    """An embeddings folder (sub-folders included), loaded for the model last asked about."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._hashes = FileHashes(sha256_of_file)
        self._loaded: LoadedEmbeddings | None = None
        self._model: weakref.ref[Any] | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()

    def for_model(self, model: Any) -> LoadedEmbeddings:
        """The folder's embeddings for ``model``, loaded again when the model or any file changed since last time."""
        with self._lock:
            files = self._files()
            fingerprint = _fingerprint(files)
            if self._loaded is None or self._model is None or self._model() is not model \
                    or fingerprint != self._fingerprint:
                self._loaded = self._load(files, model)
                self._model, self._fingerprint = weakref.ref(model), fingerprint
                log.info("textual inversion: %d embedding(s) loaded, %d skipped, %d unreadable",
                         len(self._loaded.database.word_embeddings), len(self._loaded.database.skipped_embeddings),
                         len(self._loaded.errors))
            return self._loaded

    def loaded_for(self, model: Any) -> LoadedEmbeddings | None:
        """What ``for_model`` last loaded, if that was for ``model``; never reads the disk (for the token counter)."""
        with self._lock:
            same_model = self._model is not None and self._model() is model
            return self._loaded if same_model else None

    def refresh(self) -> None:
        """Forget what was loaded: the next ``for_model`` reads the folder again."""
        with self._lock:
            self._loaded = None

    def api_listing(self, model: Any) -> dict[str, dict[str, dict[str, Any]]]:
        """``/sdapi/v1/embeddings`` for ``model`` (``{"loaded": {}, "skipped": {}}`` when no model is loaded)."""
        if model is None:
            return {"loaded": {}, "skipped": {}}
        return self.for_model(model).database.api_listing()

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.rglob("*")
                      if path.suffix in EMBEDDING_SUFFIXES and path.is_file())

    def _load(self, files: list[Path], model: Any) -> LoadedEmbeddings:
        loaded = LoadedEmbeddings(EmbeddingDatabase(), {}, {}, self._hashes)
        for path in files:
            try:
                embedding = read_embedding_file(path)
                added = loaded.database.add(embedding, model)
            except Exception as error:  # noqa: BLE001 - a broken or foreign file must not stop the others
                log.warning("textual inversion: skipping %s: %s", path, error)
                loaded.errors[path.relative_to(self.directory).as_posix()] = str(error) or type(error).__name__
                continue
            if added:
                loaded.files[embedding.name] = path
            else:
                loaded.files.pop(embedding.name, None)
        return loaded


def _fingerprint(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:  # removed while listing: it simply is not there
            continue
        entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


class EmbeddingUsage:
    """The ``EmbeddingLookup`` a job encodes with: finds ``embeddings`` and remembers the ones the prompts used."""

    def __init__(self, embeddings: LoadedEmbeddings | None) -> None:
        self.embeddings = embeddings
        self.used: dict[str, Embedding] = {}

    def find(self, tokens: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        if self.embeddings is None:
            return None
        found = self.embeddings.find(tokens, offset)
        if found is not None:
            self.used[found[0].name] = found[0]
        return found

    def add_hashes_to(self, p: Any) -> None:
        """Add the used embeddings to ``p``'s ``TI hashes``."""
        if self.embeddings is not None:
            add_hashes(p, "TI hashes", {name: self.embeddings.short_hash(name) for name in self.used})
