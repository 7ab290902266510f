"""A1111's ``modules.call_queue``: wrappers for Gradio event functions."""
from __future__ import annotations

import functools
import html
import threading
from typing import Any, Callable

queue_lock = threading.Lock()


def wrap_queued_call(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func`` while holding the lock that serialises heavy calls."""
    @functools.wraps(func)
    def f(*args: Any, **kwargs: Any) -> Any:
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_call(func: Callable[..., Any], extra_outputs: list[Any] | None = None,
                     add_stats: bool = False) -> Callable[..., Any]:
    """Run ``func``; if it raises, log it and return ``extra_outputs`` plus an error message as HTML (the last
    output), as A1111 shows the error under the gallery."""
    @functools.wraps(func)
    def f(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - shown to the user
            from modules.a1111 import errors

            errors.display(e, getattr(func, "__name__", "call"))
            message = f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"
            return [*(extra_outputs or [None, ""]), message]
    return f


def wrap_gradio_gpu_call(func: Callable[..., Any], extra_outputs: list[Any] | None = None) -> Callable[..., Any]:
    return wrap_gradio_call(wrap_queued_call(func), extra_outputs=extra_outputs)


def wrap_gradio_call_no_job(func: Callable[..., Any], extra_outputs: list[Any] | None = None,
                            add_stats: bool = False) -> Callable[..., Any]:
    return wrap_gradio_call(func, extra_outputs, add_stats)


