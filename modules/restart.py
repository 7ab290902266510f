"""Restarting the app from the page or the API, as A1111's "Apply and restart UI" and ``/sdapi/v1/server-restart``.

A process cannot load a new extension's code into a page that is already built, so a restart is a new process:
``./webui.sh`` sets ``SD_WEBUI_RESTART`` (A1111's variable) and starts ``app.py`` again when it exits with
``RESTART_EXIT_CODE``. Started another way (``python app.py``), the app says it cannot restart itself.
The exit comes a moment after the request so that its answer reaches the page; the job history is written as jobs
change, and a job cut short is marked interrupted at the next start (modules/job_queue.py).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger(__name__)

ENV = "SD_WEBUI_RESTART"
RESTART_EXIT_CODE = 75      # EX_TEMPFAIL: webui.sh starts the app again on this code, and only on it
DELAY_SECONDS = 0.5


def is_restartable() -> bool:
    return bool(os.environ.get(ENV))


def not_restartable_reason() -> str | None:
    if is_restartable():
        return None
    return ("This app was not started with ./webui.sh, so it cannot start itself again: stop it and start it "
            "again to load the changes.")


def exit_soon(code: int, exit: Callable[[int], None] = os._exit, delay: float = DELAY_SECONDS) -> None:
    """End the process with ``code`` after ``delay`` seconds (on a timer thread, so the caller can answer first)."""
    log.warning("The app ends now (exit code %d%s)", code, ", to be started again" if code == RESTART_EXIT_CODE else "")
    timer = threading.Timer(delay, exit, args=(code,))
    timer.daemon = True
    timer.start()


def restart(exit: Callable[[int], None] = os._exit, delay: float = DELAY_SECONDS) -> None:
    """Restart the app (under ./webui.sh); RuntimeError saying why when it cannot."""
    if (reason := not_restartable_reason()) is not None:
        raise RuntimeError(reason)
    exit_soon(RESTART_EXIT_CODE, exit, delay)
