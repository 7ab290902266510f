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
from pathlib import Path
from typing import Any

import piexif
import piexif.helper
from PIL import Image, PngImagePlugin

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
               prompt: str | None = None, extension: str = "png", info: str | None = None, grid: bool = False,
               pnginfo_section_name: str = "parameters", p: Any = None, existing_info: dict[str, Any] | None = None,
               forced_filename: str | None = None, suffix: str = "", save_to_dirs: bool | None = None,
               opts: Options | None = None) -> tuple[str, str | None]:
    """Save ``image`` into ``path`` with its infotext ``info``; returns ``(image file, .txt file or None)``.

    PNG: ``info`` goes into the text chunk ``pnginfo_section_name``, next to the chunks in ``existing_info``.
    JPEG/WebP: into EXIF UserComment (unicode). ``forced_filename`` (without extension) replaces the numbered name
    and overwrites. ``p`` supplies ``[model_name]``-style tags of the filename patterns. A ``.txt`` copy of the
    infotext is written when the (A1111) option ``save_txt`` is on.
    """
    opts = opts or Options()
    extension = extension.lower().lstrip(".")
    if extension not in _FORMATS:
        raise ValueError(f"unsupported image format {extension!r}; valid: {', '.join(_FORMATS)}")
    if save_to_dirs is None:
        save_to_dirs = opts.save_to_dirs
    folder = Path(path)
    tags = _FilenameTags(seed, prompt, p)
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
            if grid or seed is None:
                pattern = ""
            else:
                pattern = "[seed]" if save_to_dirs or not prompt else "[seed]-[prompt_spaces]"
            decoration = tags.apply(pattern) + suffix
            fullfn = _publish_numbered(temp, folder, basename, f"-{decoration}" if decoration else "", extension)
    finally:
        if temp.exists():
            temp.unlink()

    params.filename = str(fullfn)
    job_queue.note_saved_file(fullfn)  # in the job's history row at once
    script_callbacks.image_saved_callback(params)
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
    for name in os.listdir(folder):
        if name.startswith(prefix):
            counter = os.path.splitext(name[len(prefix):])[0].split("-")[0]
            if counter.isdigit():
                highest = max(highest, int(counter))
    return highest + 1


class _FilenameTags:
    """A1111 filename pattern tags (``[seed]``, ``[date]``, ...); a tag without a value gives "", an unknown one is
    kept as written."""

    def __init__(self, seed: int | None, prompt: str | None, p: Any) -> None:
        now = datetime.datetime.now()
        self._values: dict[str, Any] = {
            "seed": seed,
            "prompt_spaces": prompt,
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
    w, h = imgs[0].size
    grid = Image.new("RGB", (cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """An img2img input brought to ``width`` x ``height`` (Lanczos), keeping its mode.

    0 Just resize (stretch); 1 Crop and resize (fill the frame, crop the overflow evenly); 2 Resize and fill (fit
    inside, then stretch the outermost row/column of pixels over the empty borders); 3 Just resize (latent upscale;
    same as 0 here).
    """
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


def _resize(im: Image.Image, width: int, height: int) -> Image.Image:
    return im if im.size == (width, height) else im.resize((width, height), Image.Resampling.LANCZOS)
