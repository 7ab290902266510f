"""Extensions: folders ``<data dir>/extensions/<name>/`` with ``scripts/*.py`` (custom scripts and callbacks),
optionally ``metadata.ini``, ``style.css`` and ``javascript/*.js`` (loaded into the page by ``modules.page``).

- Discovery (``discover``): every folder not starting with ``.``; enabled unless listed in
  ``opts.disabled_extensions`` (by folder name) or ``--disable-all-extensions`` is given. ``preload.py`` and
  ``install.py`` are run by the app at start (``modules.a1111.lifecycle``); their problems are listed here.
- Order: ``metadata.ini`` ``[Extension]`` ``Name`` (the name others refer to, the folder name by default) and the
  comma/space separated lists ``Requires``, ``Before``, ``After``. Requires and After load the named extensions
  first, Before loads this one before them; ties go alphabetically. A dependency cycle is reported on each extension
  in it and those load alphabetically after the others.
- Failures: a script file that fails to import is logged with its extension's name and file, listed with its error
  (Extensions tab, ``/sdapi/v1/extensions``) and left out; the extension's other files load on their own (as A1111);
  an extension none of whose files imported is ``failed``. An extension that raises in ``ui()``, a hook or a callback
  is logged and listed the same way and switched off for the rest of the run (``failed``). A built-in script
  (``modules/builtin_scripts``) that fails only switches off its own file.

Everything that can fail is represented by an owner with ``active`` and ``fail(where, exc)``: an ``Extension`` or
one of its ``ScriptFile``s. ``owner_of(path)`` finds it for any file (callbacks are attributed this way).

Extension code runs through ``guarded``: whatever it raises (``sys.exit()`` included: any ``BaseException`` except a
``KeyboardInterrupt`` from the terminal) is a failure of its owner, never of the job worker or the start-up; and a
hook or callback that does not return within ``hook_timeout`` seconds (``--extension-timeout``) is abandoned on
its (pooled, reused) daemon thread, reported and its extension switched off, as is one still running when its job is interrupted
(without switching the extension off).
"""
from __future__ import annotations

import configparser
import contextlib
import contextvars
import html
import logging
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from modules.a1111 import lifecycle, missing

log = logging.getLogger(__name__)

BUILTIN_SCRIPTS_DIR = Path(__file__).resolve().parent / "builtin_scripts"
BUILTIN_NAME = "builtin"


@dataclass
class Failure:
    """One thing that raised: which extension and file, where (import, a hook, a callback) and the error."""
    extension: str
    file: str
    where: str
    error: str

    @property
    def message(self) -> str:
        return f"{self.extension}: {Path(self.file).name} failed in {self.where}: {self.error}"


@dataclass(eq=False)
class Extension:
    name: str                                   # folder name; the key in opts.disabled_extensions
    path: Path
    enabled: bool = True                        # the user's choice
    is_builtin: bool = False                    # the product's own scripts (modules/builtin_scripts)
    canonical_name: str = ""                    # metadata.ini [Extension] Name
    requires: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # warnings and errors to show the user
    failed: bool = False                        # raised: off until the app restarts

    def __post_init__(self) -> None:
        self.canonical_name = self.canonical_name or self.name

    @property
    def active(self) -> bool:
        return self.enabled and not self.failed

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "enabled" if self.enabled else "disabled"

    def script_files(self) -> list[Path]:
        folder = self.path if self.is_builtin else self.path / "scripts"
        return sorted(f for f in folder.glob("*.py") if not f.name.startswith("_"))

    def fail(self, where: str, exc: BaseException, file: str | Path | None = None, switch_off: bool = True) -> None:
        """Record ``exc`` (raised in ``where``), log it with the extension's name and file, and switch the extension
        off unless ``switch_off`` is False (a file that failed to import: only that file is left out)."""
        switch_off = switch_off and not self.is_builtin
        failure = Failure(self.name, str(file or self.path), where, missing.describe(exc))
        log.error("Extension %r (%s) failed in %s%s: %s\n%s", self.name, failure.file, where,
                  " and is disabled for the rest of the run" if switch_off else "", failure.error,
                  "".join(traceback.format_exception(exc)).rstrip())
        failures.append(failure)
        self.problems.append(failure.message)
        if switch_off:
            self.failed = True


@dataclass(eq=False)
class ScriptFile:
    """One loaded ``.py`` file of scripts. It is the unit that is switched off when a built-in script fails or a
    file fails to import; a failure of an extension's code at run time switches off the whole extension."""
    path: Path
    extension: Extension
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.error is None and self.extension.active

    def fail(self, where: str, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        if where != "import":
            self.extension.fail(where, exc, self.path)
            return
        self.extension.fail(where, exc, self.path, switch_off=False)
        own = [f for f in script_files.values() if f.extension is self.extension]
        if not self.extension.is_builtin and all(f.error is not None for f in own) and \
                len(own) == len(self.extension.script_files()):
            self.extension.failed = True    # nothing of it loaded


# The extensions of this run (builtin first, then user extensions in load order), their loaded script files, and
# every failure so far.
builtin = Extension(BUILTIN_NAME, BUILTIN_SCRIPTS_DIR, is_builtin=True)
extensions: list[Extension] = []
script_files: dict[Path, ScriptFile] = {}
failures: list[Failure] = []


# ---------------------------------------------------------------------------------------------------------------------
# Running extension code
hook_timeout: float | None = 60.0
"""Seconds a hook or callback may run before it is abandoned (``--extension-timeout``; None or 0: no limit)."""


class HookTimeout(Exception):
    """Extension code that overran ``hook_timeout``."""


class HookAbandoned(Exception):
    """Extension code still running when its job was interrupted."""


def guarded(owner: Any, where: str, fn: Callable[..., Any], args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None, *, timed: bool = True, passthrough: tuple[type, ...] = (),
            interrupted: Callable[[], bool] | None = None) -> tuple[bool, Any]:
    """Run extension code: ``(True, result)``, or ``(False, None)`` once a failure was reported on ``owner`` (an
    ``Extension``/``ScriptFile``; None: app code, only logged). ``timed``: on a daemon thread, abandoned after
    ``hook_timeout`` or as soon as ``interrupted()``; otherwise (hooks that run a whole job, or build the page) on
    this thread. Exceptions in ``passthrough`` are the code's deliberate answer and propagate."""
    try:
        if timed and hook_timeout:
            return True, _run_limited(fn, args, kwargs or {}, hook_timeout, interrupted)
        return True, fn(*args, **(kwargs or {}))
    except passthrough:
        raise
    except HookAbandoned as e:
        log.warning("%s was still running when its job was interrupted; abandoned: %s", where, e)
        return False, None
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise  # Ctrl+C at the terminal stops the app
        _report(owner, where, KeyboardInterrupt("raised by extension code"))
        return False, None
    except BaseException as e:  # noqa: BLE001 - SystemExit too: extension code never stops the server
        _report(owner, where, e)
        return False, None


def _report(owner: Any, where: str, exc: BaseException) -> None:
    if owner is not None:
        owner.fail(where, exc)
    else:
        log.error("%s failed: %s", where, exc, exc_info=exc)


def _run_limited(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float,
                 interrupted: Callable[[], bool] | None) -> Any:
    """``fn(*args, **kwargs)`` on a pooled daemon thread that sees this thread's context variables and torch grad /
    inference mode; its exception is raised here. Waits at most ``timeout`` seconds (HookTimeout) and stops waiting
    when ``interrupted()`` (HookAbandoned); the thread is left to finish on its own, then serves later calls.

    Threads are reused (a callback called at every sampling step, e.g. ``on_cfg_denoiser``, would otherwise start a
    thread per call): a call takes an idle worker or starts one, so nested calls and abandoned ones never block."""
    outcome: dict[str, Any] = {}
    context, modes = contextvars.copy_context(), _torch_modes()
    done = threading.Event()

    def task() -> None:
        threading.current_thread().name = f"extension-{getattr(fn, '__name__', 'hook')}"  # what runs there now
        try:
            with modes():
                outcome["result"] = context.run(fn, *args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = e

    deadline = time.monotonic() + timeout
    _Worker.take().run(task, done)
    while not done.wait(max(0.0, min(0.05 if interrupted is not None else timeout, deadline - time.monotonic()))):
        if interrupted is not None and interrupted():
            raise HookAbandoned("the job was interrupted")
        if time.monotonic() >= deadline:
            raise HookTimeout(f"did not return within {timeout:g} s and was abandoned (--extension-timeout)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


class _Worker:
    """A daemon thread that runs extension code, one call at a time, and then waits in the idle pool for the next."""

    _idle: list["_Worker"] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._task: tuple[Callable[[], None], threading.Event] | None = None
        self._ready = threading.Semaphore(0)
        threading.Thread(target=self._loop, daemon=True, name="extension-code").start()

    @classmethod
    def take(cls) -> "_Worker":
        with cls._lock:
            if cls._idle:
                return cls._idle.pop()
        return cls()

    def run(self, task: Callable[[], None], done: threading.Event) -> None:
        """Run ``task`` (which never raises) on this worker; ``done`` is set once the worker is idle again."""
        self._task = (task, done)
        self._ready.release()

    def _loop(self) -> None:
        while True:
            self._ready.acquire()
            (task, done), self._task = self._task, None
            try:
                task()
            finally:
                threading.current_thread().name = "extension-idle"
                with self._lock:
                    self._idle.append(self)
                done.set()


def _torch_modes() -> Callable[[], Any]:
    """A context manager factory that puts another thread in this thread's torch grad and inference mode (both are
    per thread; a callback that edits sampling tensors in place needs the same mode)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    @contextlib.contextmanager
    def modes():
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            yield

    return modes


# ---------------------------------------------------------------------------------------------------------------------
# Discovery and order
# ---------------------------------------------------------------------------------------------------------------------
def discover(extensions_dir: Path | None, disabled: Iterable[str] = (), disable_all: bool = False) -> list[Extension]:
    """Find the extensions of ``extensions_dir`` in load order and make them this run's (``extensions``)."""
    disabled = set(disabled)
    _forget_modules(extensions)
    found = []
    if extensions_dir is not None and extensions_dir.is_dir():
        for folder in sorted(extensions_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                ext = Extension(folder.name, folder.resolve(), enabled=not disable_all and folder.name not in disabled)
                _read_metadata(ext)
                if disable_all:
                    ext.problems.append("all extensions are disabled by --disable-all-extensions")
                found.append(ext)
    ordered = sort_extensions(found)
    _check_requirements(ordered)
    lifecycle.attach_problems(ordered)      # what preload.py / install.py reported before
    builtin.problems.clear()
    builtin.failed = False
    extensions[:] = ordered
    script_files.clear()
    failures.clear()
    return ordered


def _forget_modules(exts: list[Extension]) -> None:
    """Drop the modules the previous extensions imported from their own folders (e.g. an extension's package), so
    a new discovery imports them again from where the extensions are now."""
    folders = [str(ext.path) + os.sep for ext in exts]
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if folders and file.startswith(tuple(folders)):
            del sys.modules[name]


def _read_metadata(ext: Extension) -> None:
    path = ext.path / "metadata.ini"
    if not path.is_file():
        return
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        ext.problems.append(f"metadata.ini is unreadable and was ignored: {e}")
        return
    section = parser["Extension"] if parser.has_section("Extension") else {}
    ext.canonical_name = section.get("Name", "").strip() or ext.name
    ext.requires, ext.before, ext.after = (_names(section.get(key, "")) for key in ("Requires", "Before", "After"))


def _names(text: str) -> list[str]:
    return [name for name in re.split(r"[,\s]+", text.strip()) if name]


def sort_extensions(exts: list[Extension]) -> list[Extension]:
    """Topological order by Requires/After/Before, alphabetical among equals; a cycle is reported on each extension
    in it and those are appended alphabetically."""
    by_name: dict[str, Extension] = {}
    for ext in exts:
        by_name.setdefault(ext.canonical_name, ext)
        by_name.setdefault(ext.name, ext)
    loads_after: dict[Extension, set[Extension]] = {ext: set() for ext in exts}
    for ext in exts:
        for name in (*ext.requires, *ext.after):
            if (other := by_name.get(name)) is not None and other is not ext:
                loads_after[ext].add(other)
        for name in ext.before:
            if (other := by_name.get(name)) is not None and other is not ext:
                loads_after[other].add(ext)
    ordered: list[Extension] = []
    remaining = sorted(exts, key=lambda e: e.name)
    while remaining:
        ready = next((e for e in remaining if loads_after[e].issubset(ordered)), None)
        if ready is None:
            break
        ordered.append(ready)
        remaining.remove(ready)
    if remaining:
        names = ", ".join(e.name for e in remaining)
        for ext in remaining:
            ext.problems.append(f"dependency cycle in metadata.ini among: {names}; loaded in alphabetical order")
        log.error("Extensions %s have a dependency cycle (Requires/Before/After); loading them alphabetically", names)
        ordered.extend(remaining)
    return ordered


def _check_requirements(exts: list[Extension]) -> None:
    active = {name for e in exts if e.enabled for name in (e.name, e.canonical_name)}
    for ext in exts:
        for name in ext.requires:
            if ext.enabled and name not in active:
                ext.problems.append(f"requires extension {name!r}, which is not installed or not enabled")
                log.warning("Extension %r requires %r, which is not installed or not enabled", ext.name, name)


def active_extensions() -> list[Extension]:
    return [ext for ext in extensions if ext.active]


# ---------------------------------------------------------------------------------------------------------------------
# Owners of files
# ---------------------------------------------------------------------------------------------------------------------
def register_script_file(path: Path, extension: Extension) -> ScriptFile:
    source = ScriptFile(path.resolve(), extension)
    script_files[source.path] = source
    return source


def script_file_for(path: Path) -> ScriptFile:
    """The ``ScriptFile`` of a script defined outside the loader (e.g. a test): registered on first use, owned by the
    extension folder it lies in, else treated like a built-in."""
    owner = owner_of(path)
    if isinstance(owner, ScriptFile):
        return owner
    return register_script_file(path, owner if isinstance(owner, Extension) else builtin)


def owner_of(filename: str | Path) -> ScriptFile | Extension | None:
    """What answers for code in ``filename``: its loaded script file, else the extension folder it lies in (a
    helper module of an extension, a built-in), else None (the app's own code)."""
    path = Path(filename).resolve()
    if (source := script_files.get(path)) is not None:
        return source
    for ext in (*extensions, builtin):
        if path.is_relative_to(ext.path):
            return ext
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Listing, enabling and disabling
# ---------------------------------------------------------------------------------------------------------------------
def api_list() -> list[dict[str, Any]]:
    """``/sdapi/v1/extensions`` items: A1111's fields (git remote, branch and commit of extensions installed with
    git) plus ``path``, ``status`` and ``problems``."""
    from modules.extension_git import git_info

    items = []
    for ext in extensions:
        git = git_info(ext.path)
        items.append({"name": ext.name, "remote": git and git.remote, "branch": git and git.branch,
                      "commit_hash": git and git.commit_hash, "commit_date": git and git.commit_date,
                      "version": git.short_hash if git else "", "enabled": ext.enabled, "path": str(ext.path),
                      "status": ext.status, "problems": list(ext.problems)})
    return items


def apply_enabled(opts: Any, enabled_names: Iterable[str]) -> str:
    """Persist which extensions are enabled (``opts.disabled_extensions``). Disabling takes effect at once (the
    extension's scripts and callbacks are skipped); an extension enabled now is loaded at the next start."""
    enabled_names = set(enabled_names)
    installed = {ext.name for ext in extensions}
    kept = [name for name in opts.disabled_extensions if name not in installed]
    opts.set("disabled_extensions", kept + sorted(installed - enabled_names))
    opts.save()
    to_load = []
    for ext in extensions:
        wanted = ext.name in enabled_names
        if wanted and not ext.enabled:
            to_load.append(ext.name)
        elif not wanted:
            ext.enabled = False
    message = f"Saved: {len(enabled_names & installed)} of {len(installed)} extension(s) enabled."
    if to_load:
        message += f" Restart the app to load {', '.join(sorted(to_load))}."
    return message


def table_html() -> str:
    rows = []
    for ext in extensions:
        problems = "<br>".join(html.escape(p) for p in ext.problems)
        rows.append(f"<tr><td>{html.escape(ext.name)}</td><td><code>{html.escape(str(ext.path))}</code></td>"
                    f"<td>{ext.status}</td><td>{problems}</td></tr>")
    builtin_errors = "".join(f"<li>{html.escape(p)}</li>" for p in builtin.problems)
    table = ("<table class='extensions-table'><thead><tr><th>Extension</th><th>Path</th><th>Status</th>"
             "<th>Problems</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
             if rows else "<p>No extensions installed.</p>")
    return table + (f"<p>Built-in script errors:</p><ul>{builtin_errors}</ul>" if builtin_errors else "")


def create_ui(opts: Any) -> None:
    """The Extensions tab's content (call inside a ``gr.Tab``): installed extensions with their status and errors,
    and checkboxes to enable/disable them, saved with Apply."""
    import gradio as gr

    names = [ext.name for ext in extensions]
    table = gr.HTML(table_html(), elem_id="extensions_table")
    enabled = gr.CheckboxGroup(names, value=[ext.name for ext in extensions if ext.enabled],
                               label="Enabled extensions", elem_id="extensions_enabled")
    apply = gr.Button("Apply", variant="primary", elem_id="extensions_apply")
    result = gr.HTML(elem_id="extensions_result")

    def on_apply(selected: list[str]) -> tuple[str, str]:
        return html.escape(apply_enabled(opts, selected or [])), table_html()

    apply.click(on_apply, enabled, [result, table])
