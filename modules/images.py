"""Saving images with their infotext, reading it back, grids and img2img resizing (A1111's behaviour).

Saving is atomic: the image is encoded into a hidden temporary file in the target folder and then published under
its final name with a hard link, which fails instead of overwriting when the name is taken (on file systems without
hard links, a rename under a lock). A reader never sees a partly written image, and two threads that pick the same
counter never overwrite each other: the second takes the next number.

Names (A1111): ``NNNNN-<seed>.png`` (5-digit counter = 1 + the highest number in the folder, from 00000), with the
prompt appended when images are not saved into subfolders (``NNNNN-<seed>-<prompt>.png``); grids and other named
images ``<basename>-NNNN.png`` (4 digits). The subfolder comes from ``opts.directories_filename_pattern``
(``[date]`` = ``YYYY-MM-DD``).
"""
from __future__ import annotations

import datetime
import math
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import piexif
import piexif.helper
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from modules import job_queue
from modules.options import Options

_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# Image.info keys that are not text for the PNG Info tab.
_NON_TEXT_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
                  "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
                  "transparency", "gamma", "aspect", "xmp"}
_INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
_MAX_FILENAME_PART = 128
_RE_PATTERN_TAG = re.compile(r"\[(\w+)\]")

_publish_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------------------
def save_image(image: Image.Image, path: str | os.PathLike[str], basename: str = "", seed: int | None = None,
               prompt: str | None = None, extension: str = "png", info: str | None = None,
               short_filename: bool | None = None, no_prompt: bool = False, grid: bool = False,
               pnginfo_section_name: str = "parameters", p: Any = None, existing_info: dict[str, Any] | None = None,
               forced_filename: str | None = None, suffix: str = "", save_to_dirs: bool | None = None, *,
               opts: Options | None = None) -> tuple[str, str | None]:
    """Save ``image`` into ``path`` with its infotext ``info``; returns ``(image file, .txt file or None)``. The
    positional order is A1111's.

    PNG: ``info`` goes into the text chunk ``pnginfo_section_name``, next to the chunks in ``existing_info``.
    JPEG/WebP: into EXIF UserComment (unicode). ``forced_filename`` (without extension) replaces the numbered name
    and overwrites. ``short_filename``: the bare counter (the default for grids), ``no_prompt``: seed without prompt.
    ``p`` supplies ``[model_name]``-style tags of the filename patterns. A ``.txt`` copy of the infotext is written
    when the (A1111) option ``save_txt`` is on. ``opts``: the job's options (default: the running app's).
    """
    if opts is None:
        from modules import shared

        opts = getattr(p, "opts", None) or shared.opts
    if path is None:
        raise ValueError("save_image: no folder to save into (path is None)")
    if short_filename is None:
        short_filename = grid
    extension = extension.lower().lstrip(".")
    if extension not in _FORMATS:
        raise ValueError(f"unsupported image format {extension!r}; valid: {', '.join(_FORMATS)}")
    if save_to_dirs is None:
        save_to_dirs = getattr(opts, "grid_save_to_dirs", True) if grid else opts.save_to_dirs
    folder = Path(path)
    tags = _FilenameTags(seed, prompt, p, getattr(opts, "directories_max_prompt_words", 8))
    if save_to_dirs:
        folder = folder.joinpath(*_subfolders(tags.apply(opts.directories_filename_pattern or "[date]")))
    folder.mkdir(parents=True, exist_ok=True)

    from modules import script_callbacks

    # Extensions may change the image or its text chunks before it is written (A1111's on_before_image_saved).
    params = script_callbacks.ImageSaveParams(image, p, str(folder), {**(existing_info or {}),
                                                                        **({pnginfo_section_name: info} if info else {})})
    script_callbacks.before_image_saved_callback(params)
    image, info = params.image, params.pnginfo.pop(pnginfo_section_name, None)
    temp = _write_temp(image, folder, extension, info if opts.enable_pnginfo else None, pnginfo_section_name,
                       params.pnginfo, opts)
    try:
        if forced_filename is not None:
            fullfn = folder / f"{forced_filename}.{extension}"
            os.replace(temp, fullfn)
        else:
            custom = getattr(opts, "samples_filename_pattern", "")
            if short_filename or (seed is None and not custom):
                pattern = ""
            elif custom:           # A1111's "Images filename pattern"
                pattern = custom
            else:
                pattern = "[seed]" if save_to_dirs or no_prompt or not prompt else "[seed]-[prompt_spaces]"
            decoration = tags.apply(pattern) + suffix
            if decoration and not getattr(opts, "save_images_add_number", True):
                fullfn = _publish_named(temp, folder, f"{basename}-{decoration}" if basename else decoration,
                                        extension)
            else:
                fullfn = _publish_numbered(temp, folder, basename, f"-{decoration}" if decoration else "", extension)
    finally:
        if temp.exists():
            temp.unlink()

    params.filename = str(fullfn)
    job_queue.note_saved_file(fullfn)  # in the job's history row at once
    script_callbacks.image_saved_callback(params)
    _export_jpg_copy(image, fullfn, info if opts.enable_pnginfo else None, opts)
    txt_fullfn = None
    if info is not None and getattr(opts, "save_txt", False):
        txt_fullfn = fullfn.with_suffix(".txt")
        temp_txt = folder / f".{uuid.uuid4().hex}.txt.tmp"
        temp_txt.write_text(info, encoding="utf-8")
        os.replace(temp_txt, txt_fullfn)
    return str(fullfn), str(txt_fullfn) if txt_fullfn else None


def _write_temp(image: Image.Image, folder: Path, extension: str, info: str | None, section: str,
                existing_info: dict[str, Any], opts: Options) -> Path:
    """Encode ``image`` into a new hidden file in ``folder`` (removed again if encoding fails)."""
    image_format = _FORMATS[extension]
    kwargs: dict[str, Any] = {}
    if image_format == "PNG":
        pnginfo = PngImagePlugin.PngInfo()
        chunks = {**existing_info, **({section: info} if info is not None else {})}
        for key, value in chunks.items():
            pnginfo.add_text(key, str(value))
        kwargs["pnginfo"] = pnginfo
    else:
        kwargs["quality"] = opts.jpeg_quality
        if image_format == "WEBP":
            kwargs["lossless"] = bool(getattr(opts, "webp_lossless", False))
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        if info is not None:
            user_comment = piexif.helper.UserComment.dump(info, encoding="unicode")
            kwargs["exif"] = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: user_comment}})
    temp = folder / f".{uuid.uuid4().hex}.{extension}.tmp"
    try:
        with open(temp, "xb") as f:  # created with the usual permissions (umask), unlike mkstemp's 0600
            image.save(f, format=image_format, **kwargs)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _publish_numbered(temp: Path, folder: Path, basename: str, decoration: str, extension: str) -> Path:
    """Give ``temp`` the first free numbered name from 1 + the folder's highest number; never overwrites."""
    with _publish_lock:
        number = get_next_sequence_number(folder, basename)
        while True:
            counter = f"{number:05}" if basename == "" else f"{basename}-{number:04}"
            fullfn = folder / f"{counter}{decoration}.{extension}"
            if _link_new(temp, fullfn):
                return fullfn
            number += 1


def _publish_named(temp: Path, folder: Path, name: str, extension: str) -> Path:
    """Give ``temp`` the name ``name`` (no running number); a taken name gets ``-1``, ``-2``, ... (never overwrites)."""
    with _publish_lock:
        number = 0
        while True:
            fullfn = folder / (f"{name}.{extension}" if number == 0 else f"{name}-{number}.{extension}")
            if _link_new(temp, fullfn):
                return fullfn
            number += 1


def _export_jpg_copy(image: Image.Image, fullfn: Path, info: str | None, opts: Any) -> Path | None:
    """A1111's ``export_for_4chan``: beside a saved image larger than ``img_downscale_threshold`` MB or wider/higher
    than ``target_side_length`` pixels, a JPG copy scaled down to fit that side (not for JPG files themselves)."""
    if not getattr(opts, "export_for_4chan", False) or fullfn.suffix.lower() in (".jpg", ".jpeg"):
        return None
    side = int(getattr(opts, "target_side_length", 4000))
    too_big = fullfn.stat().st_size > float(getattr(opts, "img_downscale_threshold", 4.0)) * 1024 * 1024
    if not too_big and max(image.size) <= side:
        return None
    copy = image.convert("RGB")
    if max(copy.size) > side:
        scale = side / max(copy.size)
        copy = copy.resize((max(1, round(copy.width * scale)), max(1, round(copy.height * scale))), Image.LANCZOS)
    kwargs: dict[str, Any] = {"quality": opts.jpeg_quality}
    if info is not None:
        kwargs["exif"] = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(
            info, encoding="unicode")}})
    target = fullfn.with_suffix(".jpg")
    temp = fullfn.parent / f".{uuid.uuid4().hex}.jpg.tmp"
    try:
        copy.save(temp, format="JPEG", **kwargs)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    job_queue.note_saved_file(target)
    return target


def _link_new(source: Path, target: Path) -> bool:
    """Make ``target`` a name of ``source`` unless ``target`` exists (atomic; across processes with hard links)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links here (e.g. FAT); the caller holds _publish_lock
        if target.exists():
            return False
        os.replace(source, target)
    return True


def get_next_sequence_number(folder: str | os.PathLike[str], basename: str = "") -> int:
    """1 + the highest counter among ``folder``'s files named ``[<basename>-]NNNN...`` (0 when there are none)."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(prefix) and not entry.is_dir():     # a dated subfolder "2024-..." is no counter
            counter = os.path.splitext(name[len(prefix):])[0].split("-")[0]
            if counter.isdigit():
                highest = max(highest, int(counter))
    return highest + 1


class _FilenameTags:
    """A1111 filename pattern tags (``[seed]``, ``[date]``, ...); a tag without a value gives "", an unknown one is
    kept as written."""

    def __init__(self, seed: int | None, prompt: str | None, p: Any, max_prompt_words: int = 8) -> None:
        now = datetime.datetime.now()
        words = re.findall(r"[^\W_]+", prompt or "")[:max_prompt_words]
        self._values: dict[str, Any] = {
            "seed": seed,
            "prompt_spaces": prompt,
            "prompt": prompt.replace(" ", "_") if prompt else None,
            "prompt_words": " ".join(words) if words else None,
            "date": now.strftime("%Y-%m-%d"),
            "datetime": now.strftime("%Y%m%d%H%M%S"),
            "steps": getattr(p, "steps", None),
            "cfg": getattr(p, "cfg_scale", None),
            "sampler": getattr(p, "sampler_name", None),
            "width": getattr(p, "width", None),
            "height": getattr(p, "height", None),
            "model_name": getattr(p, "sd_model_name", None),
            "model_hash": getattr(p, "sd_model_hash", None),
        }

    def apply(self, pattern: str) -> str:
        def replace(match: re.Match[str]) -> str:
            tag = match.group(1).lower()
            if tag not in self._values:
                return match.group(0)
            value = self._values[tag]
            return "" if value is None else sanitize_filename_part(str(value))

        return _RE_PATTERN_TAG.sub(replace, pattern)


def _subfolders(dirname: str) -> list[str]:
    """The folder names of a directory pattern's result; ``..`` and empty parts are dropped."""
    return [part.strip(" ") for part in re.split(r"[/\\]", dirname) if part.strip(" ") not in ("", ".", "..")]


def sanitize_filename_part(text: str) -> str:
    """``text`` usable in a file name: forbidden characters become ``_``, no leading spaces or trailing ``. ``,
    at most 128 characters and 128 UTF-8 bytes (file systems allow 255 bytes per name; four-byte characters such as
    emoji would pass a character limit)."""
    text = "".join("_" if c in _INVALID_FILENAME_CHARS or ord(c) < 32 else c for c in text)
    text = text.lstrip(" ")[:_MAX_FILENAME_PART]
    text = text.encode("utf-8", "replace")[:_MAX_FILENAME_PART].decode("utf-8", "ignore")
    return text.rstrip(" .")


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------
def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """``(infotext or None, other text items)`` of an image: PNG ``parameters`` chunk or EXIF UserComment."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    exif = items.pop("exif", None)
    if exif:
        comment = _exif_user_comment(exif)
        if comment:
            geninfo = comment
    for key in _NON_TEXT_INFO:
        items.pop(key, None)
    return geninfo, items


def _exif_user_comment(exif: bytes) -> str:
    try:
        raw = piexif.load(exif).get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
    except (ValueError, OSError, piexif.InvalidImageDataError):
        return ""
    try:
        return piexif.helper.UserComment.load(raw)
    except ValueError:
        return raw.decode("utf-8", errors="ignore")


# ---------------------------------------------------------------------------------------------------------------------
# Grids and resizing
# ---------------------------------------------------------------------------------------------------------------------
def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """Images in a grid (black background), row by row, each cell the size of the first image.

    ``rows`` follows A1111's "grid row count" setting: None or -1 = ``round(sqrt(n))`` (A1111's default),
    0 = ``batch_size``, else that many rows (at most one per image).
    """
    if not imgs:
        raise ValueError("image_grid needs at least one image")
    if rows is None or rows < 0:
        rows = round(math.sqrt(len(imgs)))
    elif rows == 0:
        rows = batch_size
    rows = min(rows, len(imgs))
    cols = math.ceil(len(imgs) / rows)
    from modules import script_callbacks

    params = script_callbacks.ImageGridLoopParams(list(imgs), cols, rows)   # extensions may re-arrange the grid
    script_callbacks.image_grid_callback(params)
    imgs, cols, rows = params.imgs, params.cols, params.rows
    w, h = imgs[0].size
    grid = Image.new("RGB", (cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


class Grid(NamedTuple):
    """An image cut into overlapping tiles by ``split_grid``: ``tiles`` is a list of rows ``[y, tile_h, row]``, each
    row a list of ``[x, tile_w, tile image]`` (replace the images, then ``combine_grid``)."""
    tiles: list[list[Any]]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """``image`` as tiles of ``tile_w`` x ``tile_h`` that overlap by at least ``overlap`` pixels and cover it evenly
    (the last row and column end at the image's edge)."""
    if overlap >= tile_w or overlap >= tile_h:
        raise ValueError(f"split_grid: overlap {overlap} must be smaller than the tile ({tile_w}x{tile_h})")
    width, height = image.size

    def starts(size: int, tile: int) -> list[int]:
        count = max(math.ceil((size - overlap) / (tile - overlap)), 1)
        step = (size - tile) / (count - 1) if count > 1 else 0
        return [min(int(i * step), max(size - tile, 0)) for i in range(count)]

    tiles = [[y, tile_h, [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))] for x in starts(width, tile_w)]]
             for y in starts(height, tile_h)]
    return Grid(tiles, tile_w, tile_h, width, height, overlap)


def combine_grid(grid: Grid) -> Image.Image:
    """The image of ``grid``'s tiles put back in place; where tiles overlap, the first ``overlap`` pixels of the later
    tile fade in linearly over the earlier one (no seams)."""
    fade_in = (np.arange(grid.overlap, dtype=np.float32) / max(grid.overlap, 1))
    canvas = np.zeros((grid.image_h, grid.image_w, 3), dtype=np.float32)
    for y, h, row in grid.tiles:
        band = np.zeros((h, grid.image_w, 3), dtype=np.float32)
        for x, w, tile in row:
            _paste_fading(band, np.asarray(tile.convert("RGB"), dtype=np.float32)[:, :w], x, fade_in, axis=1)
        _paste_fading(canvas, band[:grid.image_h - y], y, fade_in, axis=0)
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))


def _paste_fading(target: np.ndarray, piece: np.ndarray, start: int, fade_in: np.ndarray, axis: int) -> None:
    """Write ``piece`` into ``target`` at ``start`` along ``axis``, its first ``len(fade_in)`` lines blended in."""
    length = min(piece.shape[axis], target.shape[axis] - start)
    piece = piece.take(range(length), axis=axis)
    ramp = len(fade_in) if start > 0 else 0
    ramp = min(ramp, length)
    weights = np.ones(length, dtype=np.float32)
    weights[:ramp] = fade_in[:ramp]
    shape = [1, 1, 1]
    shape[axis] = length
    index = [slice(None)] * 3
    index[axis] = slice(start, start + length)
    w = weights.reshape(shape)
    target[tuple(index)] = target[tuple(index)] * (1 - w) + piece * w


def flatten(img: Image.Image, bgcolor: str | tuple[int, ...]) -> Image.Image:
    """``img`` as RGB, transparent parts over ``bgcolor`` (A1111: ``opts.img2img_background_color``)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, bgcolor)
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None) -> Image.Image:
    """An img2img input brought to ``width`` x ``height`` (Lanczos), keeping its mode.

    0 Just resize (stretch); 1 Crop and resize (fill the frame, crop the overflow evenly); 2 Resize and fill (fit
    inside, then stretch the outermost row/column of pixels over the empty borders); 3 Just resize (latent upscale;
    same as 0 here). ``upscaler_name``: enlarge with that upscaler of ``shared.sd_upscalers`` before the final resize.
    """
    if upscaler_name is not None:
        im = _upscale_with(upscaler_name, im, width, height)
    if resize_mode in (0, 3):
        return _resize(im, width, height)
    if resize_mode not in (1, 2):
        raise ValueError(f"unknown resize mode {resize_mode}; valid: 0, 1, 2, 3")
    frame_is_wider = width * im.height > height * im.width
    # Crop matches the frame's longer side (the image covers it), fill its shorter one (the image fits inside).
    if frame_is_wider == (resize_mode == 1):
        src_w, src_h = width, im.height * width // im.width
    else:
        src_w, src_h = im.width * height // im.height, height
    resized = _resize(im, src_w, src_h)
    result = Image.new(im.mode, (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    result.paste(resized, box=(left, top))
    if resize_mode == 2:
        _stretch_edges(result, resized, left, top)
    return result


def _stretch_edges(result: Image.Image, resized: Image.Image, left: int, top: int) -> None:
    """Fill the borders around ``resized`` (pasted at ``left, top``) with its edge pixels stretched outwards."""
    width, height = result.size
    right, bottom = left + resized.width, top + resized.height
    borders = [  # (source edge box in `resized`, target box in `result`)
        ((0, 0, resized.width, 0), (0, 0, width, top)),
        ((0, resized.height, resized.width, resized.height), (0, bottom, width, height)),
        ((0, 0, 0, resized.height), (0, 0, left, height)),
        ((resized.width, 0, resized.width, resized.height), (right, 0, width, height)),
    ]
    for edge, (x0, y0, x1, y1) in borders:
        if x1 > x0 and y1 > y0:
            result.paste(resized.resize((x1 - x0, y1 - y0), box=edge), box=(x0, y0))


def _upscale_with(name: str, im: Image.Image, width: int, height: int) -> Image.Image:
    from modules import shared

    upscalers = getattr(shared, "sd_upscalers", None) or []
    upscaler = next((u for u in upscalers if u.name.lower() == name.lower()), None)
    if upscaler is None:
        known = ", ".join(u.name for u in upscalers) or "none"
        raise ValueError(f"upscaler_name: no upscaler {name!r}; available: {known}")
    scale = max(width / im.width, height / im.height)
    if scale <= 1 or upscaler.name == "None":
        return im
    return upscaler.scaler.upscale(im, scale, upscaler.data_path)


def _resize(im: Image.Image, width: int, height: int) -> Image.Image:
    return im if im.size == (width, height) else im.resize((width, height), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------------------------------
# Labelled grids (A1111's GridAnnotation / draw_grid_annotations / draw_prompt_matrix): cells with optional margins,
# column labels on top, row labels on the left; an inactive label (a prompt part not in that cell) is drawn grey and
# struck through.
# ---------------------------------------------------------------------------------------------------------------------
_TEXT = (0, 0, 0)
_INACTIVE_TEXT = (153, 153, 153)
_BACKGROUND = (255, 255, 255)
_MIN_FONT_SIZE = 10


@dataclass
class GridAnnotation:
    text: str = ""
    is_active: bool = True


def grid_with_margins(images: list[Image.Image], cols: int, margin: int = 0,
                      cell: tuple[int, int] | None = None) -> Image.Image:
    """Images row by row, ``cols`` per row, ``margin`` pixels apart; each cell the size of ``cell`` (default: the
    first image). Missing images leave the cell black."""
    w, h = cell or images[0].size
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w + (cols - 1) * margin, rows * h + (rows - 1) * margin), _BACKGROUND)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB").resize((w, h)) if image.size != (w, h) else image.convert("RGB"),
                   (i % cols * (w + margin), i // cols * (h + margin)))
    return grid


def draw_grid_annotations(grid: Image.Image, cell_width: int, cell_height: int,
                          column_labels: list[list[GridAnnotation]], row_labels: list[list[GridAnnotation]],
                          margin: int = 0) -> Image.Image:
    """``grid`` with a band of column labels above and of row labels to the left (a band is left out when all its
    labels are empty). Each label is a list of lines."""
    font = ImageFont.load_default(size=max(_MIN_FONT_SIZE, (cell_width + cell_height) // 25))
    line_height = int(font.size * 1.3)
    left = 0 if not _has_text(row_labels) else max(cell_width * 3 // 4, 4 * line_height)
    columns = [_wrap(lines, font, cell_width) for lines in column_labels]
    rows = [_wrap(lines, font, left) for lines in row_labels]
    top = 0 if not _has_text(column_labels) else max(len(c) for c in columns) * line_height + line_height // 2
    result = Image.new("RGB", (grid.width + left, grid.height + top), _BACKGROUND)
    result.paste(grid, (left, top))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        x = left + col * (cell_width + margin) + cell_width / 2
        _draw_lines(draw, lines, font, x, top / 2, line_height)
    for row, lines in enumerate(rows):
        y = top + row * (cell_height + margin) + cell_height / 2
        _draw_lines(draw, lines, font, left / 2, y, line_height)
    return result


def _has_text(labels: list[list[GridAnnotation]]) -> bool:
    return any(a.text for lines in labels for a in lines)


def _wrap(lines: list[GridAnnotation], font: ImageFont.FreeTypeFont, width: int) -> list[GridAnnotation]:
    """Each annotation broken into lines no wider than ``width`` (words are never split)."""
    wrapped = []
    for annotation in lines:
        line = ""
        for word in annotation.text.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                wrapped.append(GridAnnotation(line, annotation.is_active))
                line = word
            else:
                line = candidate
        wrapped.append(GridAnnotation(line, annotation.is_active))
    return wrapped


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[GridAnnotation], font: ImageFont.FreeTypeFont, cx: float,
                cy: float, line_height: int) -> None:
    y = cy - len(lines) * line_height / 2
    for annotation in lines:
        color = _TEXT if annotation.is_active else _INACTIVE_TEXT
        draw.text((cx, y + line_height / 2), annotation.text, font=font, fill=color, anchor="mm")
        if not annotation.is_active and annotation.text:
            half = font.getlength(annotation.text) / 2
            draw.line((cx - half, y + line_height / 2, cx + half, y + line_height / 2), fill=color, width=1)
        y += line_height


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0) -> Image.Image:
    """Label a prompt-matrix grid of cells ``width`` x ``height``: ``all_prompts[1:]`` are the optional parts, the
    first half across the columns, the rest down the rows; cell (c, r) has part k of its axis when bit k is set."""
    parts = all_prompts[1:]
    across = parts[:math.ceil(len(parts) / 2)]
    down = parts[len(across):]

    def labels(axis_parts: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, is_active=bool(combination >> k & 1)) for k, text in enumerate(axis_parts)]
                for combination in range(1 << len(axis_parts))]

    return draw_grid_annotations(im, width, height, labels(across), labels(down), margin)
