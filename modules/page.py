"""What the page loads besides Gradio's own: the page's JavaScript API for extensions (``javascript/`` at the repo
root), every active extension's ``javascript/*.js`` / ``*.mjs`` and ``style.css`` (in extension order), the data
dir's ``user.css``; the settings as the page's ``opts``; and A1111's ``/file=`` route through which extensions fetch
their own files.

``/file=<path>`` serves a file only when it lies, after resolving ``..`` and symbolic links, inside one of
``served_roots``: the app's ``javascript/`` folder, an active extension's folder, or the ``tmp/`` folder of the data
dir or of the app's folder (where A1111 extensions write files for their page code). A relative path is taken from
the data dir, else from the app's folder (A1111's web UI root: ``file=extensions/<ext>/tags/x.csv``,
``file=tmp/x.txt``); hidden files and folders (``.git``, ``.env``) are never served.
With ``--gradio-auth`` the route needs the same login as the page.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import Request

from modules import extensions
from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

APP_JAVASCRIPT_DIR = REPO_ROOT / "javascript"
SCRIPT_SUFFIXES = (".js", ".mjs")


# ---------------------------------------------------------------------------------------------------------------------
# <head>
# ---------------------------------------------------------------------------------------------------------------------
def _url(path: Path) -> str:
    """``file=`` URL of ``path`` with its modification time, so a changed file is not taken from the cache."""
    return html.escape(f"file={path.as_posix()}?{int(path.stat().st_mtime)}", quote=True)


def script_files() -> list[Path]:
    """The page's scripts in load order: the app's own, then each active extension's (sorted by file name)."""
    files = sorted(f for f in APP_JAVASCRIPT_DIR.glob("*") if f.suffix in SCRIPT_SUFFIXES)
    for ext in extensions.active_extensions():
        files += sorted(f for f in (ext.path / "javascript").glob("*") if f.suffix in SCRIPT_SUFFIXES and f.is_file())
    return files


def style_files(data_dir: Path) -> list[Path]:
    """Each active extension's ``style.css``, then the data dir's ``user.css``."""
    files = [ext.path / "style.css" for ext in extensions.active_extensions()]
    return [f for f in (*files, data_dir / "user.css") if f.is_file()]


def localizations() -> dict[str, Path]:
    """Localization name -> file: each active extension's ``localizations/*.json`` (a later extension's file of the
    same name wins, as in A1111)."""
    return {f.stem: f for ext in extensions.active_extensions()
            for f in sorted((ext.path / "localizations").glob("*.json"))}


def localization_script(name: str) -> str:
    """``<script>`` setting ``window.localization`` (text -> translation) from the chosen localization; empty for
    "None". A missing or unreadable file is logged and the page stays untranslated."""
    if not name or name == "None":
        return ""
    path = localizations().get(name)
    if path is None:
        log.error("Localization %r was not found in any enabled extension's localizations/ (found: %s)", name,
                  ", ".join(sorted(localizations())) or "none")
        return ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
    except (OSError, ValueError) as e:
        log.error("Localization file %s is unreadable: %s", path, e)
        return ""
    code = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return f"<script type=\"text/javascript\">window.localization = {code};</script>"


def head_html(data_dir: Path, localization: str = "None") -> str:
    """``<script>`` and ``<link>`` tags for the page's ``<head>`` (Gradio runs them in this order)."""
    tags = [script] if (script := localization_script(localization)) else []
    for f in script_files():
        kind = "module" if f.suffix == ".mjs" else "text/javascript"
        tags.append(f'<script type="{kind}" src="{_url(f)}"></script>')
    for f in style_files(data_dir):
        tags.append(f'<link rel="stylesheet" property="stylesheet" href="{_url(f)}">')
    return "\n".join(tags)


# ---------------------------------------------------------------------------------------------------------------------
# opts
# ---------------------------------------------------------------------------------------------------------------------
def options_json(opts: Any) -> str:
    """Every setting by name, the ones extensions added included, for the page's ``opts`` (``#settings_json``)."""
    return json.dumps(opts.model_dump(mode="json"), default=str, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------------
# /file=
# ---------------------------------------------------------------------------------------------------------------------
def base_dirs(data_dir: Path) -> list[Path]:
    """Where a relative ``file=`` path is looked up: the data dir, then the app's folder (A1111's ``script_path``,
    where extensions such as tagcomplete write ``tmp/`` files for their page code)."""
    return [data_dir, REPO_ROOT]


def served_roots(data_dir: Path) -> list[Path]:
    roots = [APP_JAVASCRIPT_DIR, *(base / "tmp" for base in base_dirs(data_dir)),
             *(ext.path for ext in extensions.active_extensions())]
    return [root.resolve() for root in roots]


class FileRefused(Exception):
    """``status`` 403 (outside what is served) or 404 (inside, but no such file), and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def resolve_served_file(requested: str, data_dir: Path) -> Path:
    """The file ``/file=<requested>`` serves, or ``FileRefused``."""
    if not requested or "\0" in requested:
        raise FileRefused(403, "no file named")
    path = Path(requested)
    candidates = [path] if path.is_absolute() else [base / path for base in base_dirs(data_dir)]
    real = next((c.resolve() for c in candidates if c.exists()), candidates[0].resolve())
    root = next((r for r in served_roots(data_dir) if real.is_relative_to(r)), None)
    if root is None:
        raise FileRefused(403, f"{requested}: only files of the page's scripts, of enabled extensions and of tmp/ "
                               "are served")
    if any(part.startswith(".") for part in real.relative_to(root).parts):
        raise FileRefused(403, f"{requested}: hidden files are not served")
    if not real.is_file():
        raise FileRefused(404, f"{requested}: no such file")
    return real


def _login_checker(gradio_app: Any):
    """A FastAPI dependency that lets a request through when the page needs no login or it carries the page's
    login cookie (Gradio's own check for its routes)."""
    from fastapi import HTTPException

    def check(request: Request) -> None:
        blocks = gradio_app.get_blocks() if gradio_app is not None else None
        if blocks is None or not blocks.auth:
            return
        cookie_id = gradio_app.cookie_id
        token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{cookie_id}")
        if gradio_app.tokens.get(token) is None:
            raise HTTPException(401, "Not authenticated: log in to the web UI first")

    return check


def add_routes(app: Any, data_dir: Path, gradio_app: Any = None) -> None:
    """``/file=`` on the server app (before the page's mount, which would otherwise answer every path)."""
    from fastapi import Depends, HTTPException
    from fastapi.responses import FileResponse

    def serve(path: str) -> FileResponse:
        try:
            return FileResponse(resolve_served_file(path, data_dir))
        except FileRefused as e:
            raise HTTPException(e.status, str(e)) from None

    app.add_api_route("/file={path:path}", serve, methods=["GET", "HEAD"], include_in_schema=False,
                      dependencies=[Depends(_login_checker(gradio_app))])
    keep_page_mount_last(app)


def keep_page_mount_last(app: Any) -> None:
    """The page is mounted at ``/`` and answers every path: keep it after the routes added later (``/file=``, the
    routes extensions add in ``on_app_started``), so theirs are found first."""
    from starlette.routing import Mount

    mounts = [r for r in app.router.routes if isinstance(r, Mount) and r.path == ""]
    for mount in mounts:
        app.router.routes.remove(mount)
        app.router.routes.append(mount)


def gradio_app_of(app: Any) -> Any:
    """The Gradio app mounted at ``/`` of ``app`` (None if there is none)."""
    from starlette.routing import Mount

    return next((r.app for r in app.router.routes if isinstance(r, Mount) and r.path == ""), None)
