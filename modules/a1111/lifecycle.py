"""Extension lifecycle as A1111: ``preload.py`` before the command line is parsed, ``install.py`` before scripts
load.

- ``preload_extensions(parser, ...)``: each enabled extension's ``preload.py`` is imported and its
  ``preload(parser)`` adds the extension's flags, so they parse like the app's own (``shared.cmd_opts.<flag>``).
- ``run_installers(...)``: each enabled extension's ``install.py`` runs as a subprocess with the app's interpreter,
  ``import launch`` resolving to ``modules.a1111.launch`` (``run_pip``, ``is_installed``, ``run``, ``args``), the
  extension folder as working directory and a time limit. It runs once, and again when it (or the requirements files
  beside it) change: a hash of them is recorded after a success in ``cache.json`` (``"extension_installers"``).
  Every pip run in it (``launch.run_pip`` or its own ``python -m pip``) gets ``PIP_CONSTRAINT``: the app's pinned
  stack (``requirements.txt``, the installed torch) and no torchvision, so nothing can replace the CPU torch.
- A failure (non-zero exit, time-out) is logged with the installer's output, listed on the extension (Extensions
  tab, ``/sdapi/v1/extensions``) and is never fatal; the installer runs again at the next start.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

LAUNCH_PATH = Path(__file__).resolve().parent / "launch_path"
INSTALL_TIMEOUT_S = float(os.environ.get("WEBUI_INSTALL_TIMEOUT", "900"))
CACHE_SECTION = "extension_installers"
HASHED_FILES = ("install.py", "requirements.txt", "pyproject.toml")

# Extension name -> problems found before scripts load (preload/install); attached on discovery.
problems: dict[str, list[str]] = {}


def _report(name: str, message: str) -> None:
    problems.setdefault(name, [])
    if message not in problems[name]:
        problems[name].append(message)


def attach_problems(exts: Iterable[Any]) -> None:
    """Add the preload/install problems to the discovered extensions (called by ``extensions.discover``)."""
    for ext in exts:
        for message in problems.get(ext.name, []):
            if message not in ext.problems:
                ext.problems.append(message)


def _enabled_folders(extensions_dir: Path | None, disabled: Iterable[str], disable_all: bool) -> list[Path]:
    if disable_all or extensions_dir is None or not extensions_dir.is_dir():
        return []
    disabled = set(disabled)
    return [folder for folder in sorted(extensions_dir.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in disabled]


# ---------------------------------------------------------------------------------------------------------------------
# preload.py
# ---------------------------------------------------------------------------------------------------------------------
def disabled_in_config(data_dir: Path) -> list[str]:
    """``disabled_extensions`` of ``config.json`` (read before the settings are loaded)."""
    try:
        data = json.loads((data_dir / "config.json").read_text(encoding="utf-8"))
        value = data.get("disabled_extensions", []) if isinstance(data, dict) else []
        return [str(v) for v in value] if isinstance(value, list) else []
    except (OSError, ValueError):
        return []


def preload_extensions(parser: Any, extensions_dir: Path | None, disabled: Iterable[str] = (),
                       disable_all: bool = False) -> list[str]:
    """Call ``preload(parser)`` of every enabled extension's ``preload.py``; returns the names that did."""
    done = []
    for folder in _enabled_folders(extensions_dir, disabled, disable_all):
        path = folder / "preload.py"
        if not path.is_file():
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"preload_{folder.name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            preload = getattr(module, "preload", None)
            if preload is not None:
                preload(parser)
            done.append(folder.name)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - reported; the app starts without its flags
            log.exception("Extension %r: preload.py failed", folder.name)
            _report(folder.name, f"preload.py failed: {type(e).__name__}: {e}")
    return done


# ---------------------------------------------------------------------------------------------------------------------
# install.py
# ---------------------------------------------------------------------------------------------------------------------
def constraints_text() -> str:
    """The app's pinned stack as pip constraints, with the installed torch, and torchvision made impossible."""
    lines = ["# Written by the web UI for extensions' installers: the app's pinned stack may not change."]
    requirements = REPO_ROOT / "requirements.txt"
    pinned: dict[str, str] = {}
    if requirements.is_file():
        for raw in requirements.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if "==" in line and not line.startswith("-"):
                name, version = (part.strip() for part in line.split("==", 1))
                pinned[name.lower()] = version
    try:
        pinned["torch"] = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        pass
    lines += [f"{name}=={version}" for name, version in sorted(pinned.items())]
    lines.append("torchvision<0   # the registry's torchvision wheels replace or break the CPU torch")
    return "\n".join(lines) + "\n"


def constraints_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pip-constraints.txt"
    text = constraints_text()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


_constraints: Path | None = None


def pip_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an installer and of its pip runs: ``PIP_CONSTRAINT``, ``PYTHONPATH`` with ``launch``."""
    env = dict(os.environ)
    constraints = _constraints or constraints_file(_default_state_dir())
    env["PIP_CONSTRAINT"] = str(constraints)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    python_path = [str(LAUNCH_PATH), str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env.update(extra or {})
    return env


def _default_state_dir() -> Path:
    from modules.a1111.cache import _cache_file

    return _cache_file().parent / "cache"


def installer_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run_installers(extensions_dir: Path | None, disabled: Iterable[str] = (), disable_all: bool = False, *,
                   args: list[str] | None = None, skip: bool = False, timeout: float = INSTALL_TIMEOUT_S,
                   data_dir: Path | None = None) -> dict[str, str]:
    """Run the ``install.py`` of every enabled extension that is new or changed (hashes in ``data_dir``'s
    cache.json, the running app's by default). Returns ``{name: outcome}`` with outcome ``"ran"``, ``"unchanged"``,
    ``"skipped"`` or ``"failed ..."``."""
    global _constraints
    from modules.a1111 import cache

    outcomes: dict[str, str] = {}
    folders = [f for f in _enabled_folders(extensions_dir, disabled, disable_all) if (f / "install.py").is_file()]
    if not folders:
        return outcomes
    cache_path = data_dir / "cache.json" if data_dir is not None else cache._cache_file()
    _constraints = constraints_file(cache_path.parent / "cache")
    done = cache.cache(CACHE_SECTION, cache_path)
    for folder in folders:
        digest = installer_hash(folder)
        if skip:
            outcomes[folder.name] = "skipped"
        elif done.get(str(folder)) == digest:
            outcomes[folder.name] = "unchanged"
        else:
            outcome = _run_installer(folder, args or [], timeout)
            outcomes[folder.name] = outcome
            if outcome == "ran":
                done[str(folder)] = digest
            else:
                _report(folder.name, f"install.py {outcome}")
    return outcomes


def _run_installer(folder: Path, args: list[str], timeout: float) -> str:
    import shlex

    started = time.perf_counter()
    env = pip_environment({"WEBUI_ARGS": shlex.join(args)})
    log.info("Extension %r: running install.py", folder.name)
    try:
        result = subprocess.run([sys.executable, str(folder / "install.py")], cwd=str(folder), env=env,
                                capture_output=True, text=True, encoding="utf8", errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as e:
        log.error("Extension %r: install.py did not finish within %.0f s\n%s", folder.name, timeout,
                  _tail(e.stdout, e.stderr))
        return f"failed: did not finish within {timeout:.0f} s"
    except OSError as e:
        log.error("Extension %r: install.py could not be started: %s", folder.name, e)
        return f"failed: could not be started: {e}"
    if result.returncode != 0:
        log.error("Extension %r: install.py failed with exit code %d\n%s", folder.name, result.returncode,
                  _tail(result.stdout, result.stderr))
        last = (result.stderr or result.stdout or "").strip().splitlines()
        return f"failed with exit code {result.returncode}: {last[-1] if last else 'no output'}"
    log.info("Extension %r: install.py done in %.1f s", folder.name, time.perf_counter() - started)
    return "ran"


def _tail(stdout: Any, stderr: Any, limit: int = 4000) -> str:
    def text(value: Any) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

    return (text(stdout) + text(stderr))[-limit:].rstrip()


