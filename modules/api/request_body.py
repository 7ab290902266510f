"""JSON request bodies that the rest of the server can trust, and validation errors that can always be sent.

``StrictJsonRoute`` parses a route's JSON body off the event loop and refuses, with a 422 naming the field, what
standard JSON or SQLite cannot hold: ``NaN`` / ``Infinity`` literals (Python's ``json`` accepts them) and lone UTF-16
surrogates such as ``"\\ud800"`` (valid JSON escapes, but not valid Unicode text: they cannot be written as UTF-8).
``validation_error_handler`` answers FastAPI's 422 without echoing an input that cannot be encoded.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Coroutine

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from modules.job_queue import LONE_SURROGATE


def _error(loc: list[Any], msg: str, kind: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _no_constant(name: str) -> Any:
    raise _error([], f"{name} is not a valid JSON number; send a finite number or null", "json_invalid")


def parse_json_body(body: bytes) -> Any:
    """``body`` as JSON; ``HTTPException`` 422 for NaN / Infinity or a lone surrogate (naming where it is)."""
    value = json.loads(body, parse_constant=_no_constant)
    path = find_lone_surrogate(value)
    if path is not None:
        where = ".".join(map(str, path)) or "the body"
        raise _error(path, f"{where}: text contains a lone UTF-16 surrogate (such as \\ud800), which is not valid "
                           "Unicode; send valid UTF-8 text", "string_unicode")
    return value


def find_lone_surrogate(value: Any) -> list[Any] | None:
    """The path (keys / indexes) to the first string, or dict key, holding a lone surrogate; None when there is none.
    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[list[Any], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if LONE_SURROGATE.search(key):
                    return [*path, key.encode("utf-8", "backslashreplace").decode()]
                stack.append(([*path, key], child))
        elif isinstance(item, list):
            stack.extend(([*path, i], child) for i, child in enumerate(item))
    return None


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await run_in_threadpool(parse_json_body, await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """An ``APIRoute`` whose JSON body is parsed by ``parse_json_body`` (off the event loop)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_handler


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 layout; an echoed ``input`` that cannot be sent (NaN, a surrogate, bytes...) is left out."""
    errors = jsonable_encoder(exc.errors())
    try:
        json.dumps(errors, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        errors = [{k: v for k, v in err.items() if k not in ("input", "ctx")} for err in errors]
        errors = jsonable_encoder(errors)
    return JSONResponse(status_code=422, content={"detail": errors})
