"""A1111's ``modules.launch_utils`` / ``launch``: what an extension's ``install.py`` uses to install its
dependencies. pip always runs with the app's constraint file (``modules.a1111.lifecycle.constraints_file``), so an
extension can never replace the app's torch or the rest of its pinned stack."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
from typing import Any

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def _args() -> Any:
    """The app's flags as ``launch.args``: the running app's, or the command line an ``install.py`` gets in
    ``WEBUI_ARGS`` (``skip_install`` is always there)."""
    from modules.cmd_args import build_parser

    argv = shlex.split(os.environ.get("WEBUI_ARGS", ""))
    parsed, _ = build_parser().parse_known_args(argv)
    parsed.skip_install = getattr(parsed, "skip_install", False)
    return parsed


args = _args()


def is_installed(package: str) -> bool:
    """Whether the distribution (or else the importable module) ``package`` is installed."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def repo_dir(name: str) -> str:
    return os.path.join(dir_repos, name)


def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None,
        custom_env: dict[str, str] | None = None, live: bool = default_command_live) -> str:
    """Run ``command`` (a shell string as A1111, or a list); returns its output. Raises ``RuntimeError`` with
    ``errdesc`` and the output when it fails."""
    if desc:
        print(desc, flush=True)
    result = subprocess.run(command, shell=isinstance(command, str), env=custom_env or os.environ,
                            stdout=None if live else subprocess.PIPE, stderr=None if live else subprocess.PIPE,
                            text=True, encoding="utf8", errors="ignore")
    if result.returncode != 0:
        message = f"{errdesc or 'Error running command'}.\nCommand: {command}\nError code: {result.returncode}"
        if not live:
            message += f"\nstdout: {result.stdout or '<empty>'}\nstderr: {result.stderr or '<empty>'}"
        raise RuntimeError(message)
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str:
    """``pip <command>`` with the app's interpreter and constraint file (e.g. ``run_pip("install foo", "foo")``)."""
    if getattr(args, "skip_install", False):
        return ""
    from modules.a1111.lifecycle import pip_environment

    index = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index}',
               desc=f"Installing {desc}" if desc else None, errdesc=f"Couldn't install {desc or command}",
               custom_env=pip_environment(), live=live)


def check_run_python(code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def git_tag() -> str:
    return "v1.10.1-compatible"


def commit_hash() -> str:
    return "<none>"
