"""A1111's ``modules.hashes``: SHA-256 of files, cached in ``cache.json`` with the app's own hashes."""
from __future__ import annotations

from pathlib import Path

from modules.sd_models import HashCache, sha256_of_file


def _cache() -> HashCache:
    from modules.a1111.cache import _cache_file

    return HashCache(_cache_file())


def calculate_sha256(filename: str) -> str:
    return sha256_of_file(Path(filename))


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    return _cache().get(title.split("/")[0], Path(filename).resolve())


def sha256(filename: str, title: str, use_addnet_hash: bool = False) -> str:
    """The file's SHA-256, cached under ``title``'s category (``"checkpoint/..."``, ``"lora/..."``)."""
    return _cache().sha256(title.split("/")[0], Path(filename).resolve())
