"""Images in and out of the API: base64 (with or without a ``data:image/...;base64,`` prefix) <-> PIL."""
from __future__ import annotations

import base64
import binascii
import io

import piexif
import piexif.helper
from PIL import Image, ImageFile, PngImagePlugin

MAX_INPUT_PIXELS = 4096 * 4096

# A truncated file is an error, never a half-grey picture; PNG text chunks (zTXt / iTXt / iCCP are zlib bombs in
# waiting) are capped at 1 MB each (PIL's default) and 8 MB per image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
PngImagePlugin.MAX_TEXT_CHUNK = 1024 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 8 * 1024 * 1024


class ImageDecodeError(ValueError):
    """An input image that cannot be used; the message says why (the caller adds the field name)."""


def decode_image(data: str, max_pixels: int = MAX_INPUT_PIXELS, budget_name: str = "") -> Image.Image:
    """A base64 string (raw or a data URL) -> a loaded PIL image. URLs are refused: nothing is fetched. The size is
    read from the header and checked against ``max_pixels`` (named ``budget_name`` in the message) before the pixels
    are decoded."""
    text = data.strip()
    if text.startswith(("http://", "https://")):
        raise ImageDecodeError("fetching images from URLs is disabled; send the image itself as base64")
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ImageDecodeError("a data URL must look like data:image/png;base64,<data>")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        cap = min(max_pixels, MAX_INPUT_PIXELS)
        if width * height > cap:
            limit = f" ({budget_name})" if budget_name and max_pixels < MAX_INPUT_PIXELS else ""
            raise ImageDecodeError(f"image is {width}x{height}; at most {cap} pixels are accepted{limit}")
        image.load()
    except ImageDecodeError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise all kinds (OSError, ValueError, struct.error...) on bad files
        raise ImageDecodeError(f"not a readable image (PNG, JPEG, WEBP...): {_reason(e)}") from None
    return image


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}{': ' + text if text else ''}"


def encode_image(image: Image.Image, fmt: str = "png", quality: int = 80) -> str:
    """PIL -> raw base64 (no data: prefix), keeping the infotext: a PNG text chunk, or EXIF UserComment for JPEG/WEBP."""
    buf = io.BytesIO()
    text_items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    if fmt.lower() == "png":
        pnginfo = PngImagePlugin.PngInfo()
        for key, value in text_items.items():
            pnginfo.add_text(key, value)
        image.save(buf, format="PNG", pnginfo=pnginfo)
    else:
        kind = "JPEG" if fmt.lower() in ("jpg", "jpeg") else "WEBP"
        exif = b""
        if "parameters" in text_items:
            comment = piexif.helper.UserComment.dump(text_items["parameters"], encoding="unicode")
            exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
        rgb = image.convert("RGB") if kind == "JPEG" else image
        rgb.save(buf, format=kind, quality=quality, exif=exif)
    return base64.b64encode(buf.getvalue()).decode("ascii")
