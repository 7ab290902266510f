"""Real third-party code used as test data (``<workspace>/shared/third-party``, see its README): never copied into
the project; tests copy what they need into a temporary data dir."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def _find() -> Path:
    if os.environ.get("THIRD_PARTY_DIR"):
        return Path(os.environ["THIRD_PARTY_DIR"])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "third-party"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "third-party"


THIRD_PARTY = _find()
A1111_EXTENSIONS = THIRD_PARTY / "a1111-extensions"
if os.environ.get("CI") and not A1111_EXTENSIONS.is_dir():
    # Locally the tests that need it skip; on CI a missing copy must not turn them into silent skips.
    raise RuntimeError(f"CI: the third-party test data is not at {A1111_EXTENSIONS} (set THIRD_PARTY_DIR)")


def install_extension(name: str, extensions_dir: Path) -> Path:
    """Copy the extension ``name`` into ``extensions_dir`` as a user would (writable, like a git clone)."""
    folder = extensions_dir / name
    shutil.copytree(A1111_EXTENSIONS / name, folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return folder
