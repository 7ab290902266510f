"""Image browser routes (not in A1111's API): list the output pictures, read one's PNG info, move one to the trash.

``GET  /sdapi/v1/browser/images?search=&folder=&date_from=&date_to=&page=&page_size=``  newest first, paged
``GET  /sdapi/v1/browser/info?path=``      the picture's infotext and other text items
``GET  /sdapi/v1/browser/file?path=``      the picture itself
``POST /sdapi/v1/browser/delete {"path"}``  moves it into ``outputs/trash`` (nothing is removed from disk)

Paths are absolute or relative to the outputs folder; anything outside the output folders, in the trash or not a
picture is refused (400 naming ``path``; 404 when the picture does not exist).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from modules.api.request_body import StrictJsonRoute
from modules.image_browser import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, BrowserError, ImageBrowser

if TYPE_CHECKING:
    from modules.runtime import Runtime

PREFIX = "/sdapi/v1/browser"


class BrowserImageItem(BaseModel):
    path: str
    name: str
    folder: str
    modified: float
    size: int
    infotext: str


class BrowserListResponse(BaseModel):
    images: list[BrowserImageItem]
    total: int
    page: int
    pages: int
    folders: list[str]


class BrowserInfoResponse(BaseModel):
    path: str
    info: str
    items: dict[str, str]


class BrowserDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class BrowserDeleteResponse(BaseModel):
    path: str
    trashed_to: str


def _http(e: BrowserError) -> HTTPException:
    where = "body" if e.field == "path" else "query"
    return HTTPException(404 if e.not_found else 400,
                         detail=[{"loc": [where, e.field], "msg": e.message, "type": "value_error"}])


def router(runtime: Runtime) -> APIRouter:
    browser = ImageBrowser.for_runtime(runtime)
    r = APIRouter(route_class=StrictJsonRoute)

    @r.get(f"{PREFIX}/images", response_model=BrowserListResponse)
    async def list_images(search: str = "", folder: str = "", date_from: str = "", date_to: str = "",
                          page: int = Query(1, ge=1, le=2**31),
                          page_size: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)) -> BrowserListResponse:
        try:
            result = await run_in_threadpool(browser.list, search=search, folder=folder, date_from=date_from,
                                             date_to=date_to, page=page, page_size=page_size)
        except BrowserError as e:
            raise _http(e) from None
        return BrowserListResponse(
            images=[BrowserImageItem(path=str(i.path), name=i.name, folder=i.folder, modified=i.mtime, size=i.size,
                                     infotext=i.infotext) for i in result.images],
            total=result.total, page=result.page, pages=result.pages, folders=result.folders)

    @r.get(f"{PREFIX}/info", response_model=BrowserInfoResponse)
    def info(path: str) -> BrowserInfoResponse:
        try:
            real, text, items = browser.info(path)
        except BrowserError as e:
            raise _http(e) from None
        return BrowserInfoResponse(path=str(real), info=text, items=items)

    @r.get(f"{PREFIX}/file", response_class=FileResponse)
    def file(path: str) -> FileResponse:
        try:
            real = browser.resolve(path)
        except BrowserError as e:
            raise _http(e) from None
        return FileResponse(real, filename=real.name, content_disposition_type="inline")

    @r.post(f"{PREFIX}/delete", response_model=BrowserDeleteResponse)
    def delete(req: BrowserDeleteRequest) -> BrowserDeleteResponse:
        try:
            real = browser.resolve(req.path)
            target = browser.move_to_trash(real)
        except BrowserError as e:
            raise _http(e) from None
        return BrowserDeleteResponse(path=str(real), trashed_to=str(target))

    return r
