"""Installing and updating extensions with git, as A1111's Extensions tab does: Install from URL (``git clone`` into
``extensions/<name>``, the name taken from the URL unless given), Check for updates (``git fetch``, then compare with
the upstream branch) and Update (a fast-forward to it; local changes are never thrown away).

Every action is refused when the server is reachable from the network (``--listen``, or ``--server-name`` other
than a loopback address), unless ``--enable-insecure-extension-access``: installing an extension runs its code on
this machine, so A1111 allows it only to the person at the machine.

An installed extension is loaded at the next start (its ``install.py`` runs then, with the others).
"""
from __future__ import annotations

import html
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules import extensions

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300   # seconds for one git command (a clone of a large extension takes a while)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ExtensionGitError(Exception):
    """An install/update that did not happen, with the reason in words."""


def access_refused(args: Any) -> str | None:
    """Why installing/updating extensions is refused for a server started with ``args``; None when it is allowed."""
    if getattr(args, "enable_insecure_extension_access", False):
        return None
    listen = getattr(args, "listen", False)
    server_name = getattr(args, "server_name", None)
    if listen or (server_name and server_name not in LOOPBACK):
        where = "0.0.0.0 (--listen)" if listen and not server_name else f"{server_name} (--server-name)"
        return (f"Installing and updating extensions is disabled because this server listens on {where}: anyone who "
                "can reach it could run code on this machine. Restart with --enable-insecure-extension-access to "
                "allow it.")
    return None


def _git(*args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="echo")
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise ExtensionGitError("git is not installed (it is needed to install and update extensions)") from None
    except subprocess.TimeoutExpired:
        raise ExtensionGitError(f"git {args[0]} took longer than {GIT_TIMEOUT} s and was stopped") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ExtensionGitError(f"git {args[0]} failed: {message[-1] if message else f'exit code {done.returncode}'}")
    return done.stdout.strip()


def name_from_url(url: str) -> str:
    """``https://github.com/user/sd-webui-thing.git`` -> ``sd-webui-thing`` (A1111's rule: the URL's last part)."""
    last = re.split(r"[/\\:]", url.strip().rstrip("/\\"))[-1]
    return last[:-4] if last.endswith(".git") else last


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or name in (".", "..") or name.startswith(".") or re.search(r"[/\\\0]", name):
        raise ExtensionGitError(f"{name!r} cannot be an extension's folder name")
    return name


def install_from_url(extensions_dir: Path, url: str, dirname: str = "", branch: str = "") -> Path:
    """Clone ``url`` into ``extensions_dir/<dirname or name from URL>``; returns the new folder."""
    url = url.strip()
    if not url:
        raise ExtensionGitError("URL: enter the git URL of the extension")
    if url.startswith("-"):
        raise ExtensionGitError(f"URL: {url!r} is not a git URL")
    name = _check_name(dirname or name_from_url(url))
    target = extensions_dir / name
    if target.exists():
        raise ExtensionGitError(f"an extension folder named {name!r} already exists: {target}")
    extensions_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=extensions_dir, prefix=".installing-") as tmp:
        clone = Path(tmp) / name
        options = ["--branch", branch.strip()] if branch.strip() else []
        _git("clone", *options, "--", url, str(clone))
        shutil.move(str(clone), target)
    log.info("Installed extension %s from %s into %s", name, url, target)
    return target


@dataclass
class GitInfo:
    remote: str | None
    branch: str | None
    commit_hash: str
    commit_date: int       # seconds since the epoch, as A1111's API gives it

    @property
    def short_hash(self) -> str:
        return self.commit_hash[:8]


def git_info(path: Path) -> GitInfo | None:
    """The origin URL, branch and commit of an extension that is a git work tree (None if it is not one)."""
    if not (path / ".git").exists():
        return None
    try:
        commit_hash, commit_date = _git("log", "-1", "--format=%H %ct", cwd=path).split()
        branch = _git("rev-parse", "--abbrev-ref", "HEAD", cwd=path)
        try:
            remote = _git("config", "--get", "remote.origin.url", cwd=path) or None
        except ExtensionGitError:
            remote = None
    except (ExtensionGitError, ValueError) as e:
        log.warning("Reading git information of %s failed: %s", path, e)
        return None
    return GitInfo(remote, None if branch == "HEAD" else branch, commit_hash, int(commit_date))


def _upstream(path: Path) -> str:
    try:
        return _git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}", cwd=path)
    except ExtensionGitError:
        raise ExtensionGitError("its branch follows no remote branch") from None


def check_for_update(path: Path) -> str:
    """Fetch from the extension's remote; returns "behind" (new commits to update to), "latest" or raises."""
    if git_info(path) is None:
        raise ExtensionGitError("not installed with git")
    _git("fetch", "--quiet", cwd=path)
    upstream = _upstream(path)
    behind = int(_git("rev-list", "--count", f"HEAD..{upstream}", cwd=path))
    return "behind" if behind else "latest"


def update(path: Path) -> str:
    """Fast-forward the extension to its upstream branch; returns the new short commit hash."""
    if git_info(path) is None:
        raise ExtensionGitError("not installed with git")
    _git("fetch", "--quiet", cwd=path)
    try:
        _git("merge", "--ff-only", _upstream(path), cwd=path)
    except ExtensionGitError as e:
        raise ExtensionGitError(f"{e} (the extension has local commits or changes that an update would lose; "
                                "update it by hand)") from None
    return _git("rev-parse", "--short=8", "HEAD", cwd=path)


# ---------------------------------------------------------------------------------------------------------------------
# the Extensions tab's actions (each returns HTML to show)
# ---------------------------------------------------------------------------------------------------------------------
def _error(text: str) -> str:
    return f"<div class='error-box'>{html.escape(text)}</div>"


def ui_install(args: Any, extensions_dir: Path, url: str, dirname: str = "", branch: str = "") -> str:
    if (refused := access_refused(args)) is not None:
        return _error(refused)
    try:
        target = install_from_url(extensions_dir, url, dirname, branch)
    except ExtensionGitError as e:
        return _error(f"Not installed: {e}")
    return (f"<p>Installed into <code>{html.escape(str(target))}</code>. To load "
            f"{html.escape(target.name)}, press <b>Restart the app</b> in the Installed tab.</p>")


def _git_extensions() -> list[extensions.Extension]:
    return [ext for ext in extensions.extensions if not ext.is_builtin and git_info(ext.path) is not None]


def ui_check_for_updates(args: Any) -> str:
    if (refused := access_refused(args)) is not None:
        return _error(refused)
    rows = []
    for ext in _git_extensions():
        try:
            status = {"behind": "new commits", "latest": "latest"}[check_for_update(ext.path)]
        except ExtensionGitError as e:
            status = f"error: {e}"
        rows.append(f"<tr><td>{html.escape(ext.name)}</td><td>{html.escape(status)}</td></tr>")
    if not rows:
        return "<p>No extension was installed with git.</p>"
    return "<table class='extensions-updates'><tr><th>Extension</th><th>Update</th></tr>" + "".join(rows) + "</table>"


def ui_update(args: Any) -> str:
    """Update every git extension that has new commits."""
    if (refused := access_refused(args)) is not None:
        return _error(refused)
    lines = []
    for ext in _git_extensions():
        try:
            if check_for_update(ext.path) == "latest":
                continue
            lines.append(f"<p>{html.escape(ext.name)}: updated to {html.escape(update(ext.path))}</p>")
        except ExtensionGitError as e:
            lines.append(_error(f"{ext.name}: not updated: {e}"))
    if not lines:
        return "<p>Every extension is up to date.</p>"
    return "".join(lines) + "<p>To load the new versions, press <b>Restart the app</b>.</p>"


def create_install_ui(runtime: Any) -> None:
    """The "Install from URL" tab's content (call inside a ``gr.Tab``)."""
    import gradio as gr

    refused = access_refused(runtime.args)
    if refused:
        gr.HTML(_error(refused), elem_id="extensions_access_refused")
    url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_to_install")
    branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                        elem_id="extension_to_install_branch")
    dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                         elem_id="extension_to_install_dirname")
    install = gr.Button("Install", variant="primary", elem_id="install_extension_button")
    result = gr.HTML(elem_id="extension_install_result")
    install.click(lambda u, b, d: ui_install(runtime.args, runtime.paths.extensions_dir, u, d, b),
                  [url, branch, dirname], result)


def ui_restart(args: Any) -> str:
    """The "Restart the app" button: what an install, an update or an enabled extension needs to take effect."""
    from modules import restart

    if (refused := access_refused(args)) is not None:
        return _error(refused)
    try:
        restart.restart()
    except RuntimeError as e:
        return _error(str(e))
    return "<p class='restarting'>Restarting the app: reload this page in a few seconds, when it is back.</p>"


def create_update_ui(runtime: Any) -> None:
    """Check for updates / Update / Restart buttons (call in the Installed tab)."""
    import gradio as gr

    with gr.Row():
        check = gr.Button("Check for updates", elem_id="extensions_check_for_updates")
        update_all = gr.Button("Update", elem_id="extensions_update")
        restart = gr.Button("Restart the app", elem_id="extensions_restart")
    result = gr.HTML(elem_id="extensions_update_result")
    check.click(lambda: ui_check_for_updates(runtime.args), None, result)
    update_all.click(lambda: ui_update(runtime.args), None, result)
    restart.click(lambda: ui_restart(runtime.args), None, result)
