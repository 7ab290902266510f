"""A1111's ``modules.errors``: report exceptions to the log with a short description."""
from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

log = logging.getLogger("extensions")

exception_records: list[dict[str, Any]] = []


def record_exception() -> None:
    _, exc, _ = sys.exc_info()
    if exc is not None:
        exception_records.append({"exception": f"{type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exception(exc)})
        del exception_records[:-5]


def report(message: str, *, exc_info: bool = False) -> None:
    """Log ``message`` as an error, with the exception being handled when ``exc_info``."""
    record_exception()
    log.error(message, exc_info=exc_info and sys.exc_info()[0] is not None)


def display(e: BaseException, task: str, *, full_traceback: bool = False) -> None:
    """Log an exception raised while doing ``task``."""
    exception_records.append({"exception": f"{type(e).__name__}: {e}", "traceback": traceback.format_exception(e)})
    log.error("Error running %s: %s\n%s", task, e, "".join(traceback.format_exception(e)).rstrip())


_already_displayed: set[str] = set()


def display_once(e: BaseException, task: str) -> None:
    if task not in _already_displayed:
        display(e, task)
        _already_displayed.add(task)


def print_error_explanation(message: str) -> None:
    log.error("\n%s", message.strip())


def run(code: Any, task: str) -> None:
    try:
        code()
    except Exception as e:  # noqa: BLE001 - A1111's contract: report and go on
        display(e, task)


def get_exceptions() -> list[dict[str, Any]]:
    return list(reversed(exception_records))
