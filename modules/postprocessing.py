"""Extras: pictures run through the postprocessing scripts (``modules.scripts_postprocessing``) and saved.

Three sources, as A1111's Extras tab: one picture, several uploaded pictures, or every picture in a folder. A folder
(and an output folder) must lie inside the data dir or a folder given with ``--gradio-allowed-path``. Results go to
``outdir_samples`` or ``outdir_extras_samples`` (``outputs/extras-images``), or the given output folder, with the
infotext under the PNG text key ``extras``; the source's own ``parameters`` stay in the file.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, UnidentifiedImageError

from modules import images
from modules import infotext as infotext_mod
from modules.scripts_postprocessing import PostprocessedImage, ScriptPostprocessingRunner

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ExtrasError(ValueError):
    """Bad extras input; the message names the field."""


@dataclass
class ExtrasSource:
    image: Image.Image
    name: str | None = None   # the file name it came with (batch), used for the saved file's name


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def html_info(self) -> str:
        text = self.infotexts[0] if self.infotexts else ""
        return f"<p>{html.escape(text)}</p>"


def allowed_roots(data_dir: Path, args: Any = None) -> list[Path]:
    extra = getattr(args, "gradio_allowed_path", None) or []
    return [Path(data_dir).resolve(), *(Path(p).resolve() for p in extra)]


def allowed_dir(text: str, roots: list[Path], field_name: str, *, must_exist: bool = True) -> Path:
    """``text`` as a folder inside one of ``roots`` (relative paths are taken from the first root, the data dir)."""
    if not text or not text.strip():
        raise ExtrasError(f"{field_name}: give a folder")
    path = Path(text.strip()).expanduser()
    path = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise ExtrasError(f"{field_name}: {text} is outside the folders this server may use (the data dir "
                          f"{roots[0]} or a folder given with --gradio-allowed-path)")
    if must_exist and not path.is_dir():
        raise ExtrasError(f"{field_name}: {text} is not a folder")
    return path


def images_in_dir(folder: Path) -> list[ExtrasSource]:
    """Every readable picture directly in ``folder`` (sorted by name); other files are skipped."""
    sources = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(path) as im:
                im.load()
                sources.append(ExtrasSource(im.copy(), path.name))
        except (UnidentifiedImageError, OSError) as e:
            log.warning("Extras: skipping %s (%s)", path, e)
    return sources


def open_files(paths: Iterable[str | Path], field_name: str = "files") -> list[ExtrasSource]:
    """Uploaded files as sources; one that is not a picture is an error naming it."""
    sources = []
    for path in paths:
        path = Path(path)
        try:
            with Image.open(path) as im:
                im.load()
                sources.append(ExtrasSource(im.copy(), path.name))
        except (UnidentifiedImageError, OSError):
            raise ExtrasError(f"{field_name}: {path.name} is not a readable image") from None
    return sources


def collect_sources(mode: int, image: Image.Image | None, files: Iterable[str | Path] | None, input_dir: str,
                    out_dir: str, roots: list[Path]) -> tuple[list[ExtrasSource], Path | None]:
    """The Extras tab's sources for its mode (0 single image, 1 uploaded files, 2 a folder) and the output folder
    (None: the configured one)."""
    if mode == 0:
        if image is None:
            raise ExtrasError("image: upload an image")
        return [ExtrasSource(image)], None
    if mode == 1:
        sources = open_files(files or [])
        if not sources:
            raise ExtrasError("files: upload one or more images")
        return sources, None
    folder = allowed_dir(input_dir, roots, "input_dir")
    target = allowed_dir(out_dir, roots, "output_dir", must_exist=False) if out_dir and out_dir.strip() else None
    sources = images_in_dir(folder)
    if not sources:
        raise ExtrasError(f"input_dir: no images in {input_dir}")
    return sources, target


def output_dir(opts: Any, data_dir: Path) -> Path:
    configured = Path(opts.outdir_samples or opts.outdir_extras_samples)
    return configured if configured.is_absolute() else Path(data_dir) / configured


def make_infotext(info: dict[str, Any]) -> str:
    """``key: value, ...`` from the scripts' ``pp.info`` (a value equal to its key is written once, as A1111)."""
    return ", ".join(k if k == v else f"{k}: {infotext_mod.quote(v)}" for k, v in info.items() if v is not None)


def run_extras(runner: ScriptPostprocessingRunner, sources: Iterable[ExtrasSource], args: list[Any], *, opts: Any,
               outdir: Path, save: bool = True, state: Any = None) -> ExtrasResult:
    """Run every source through the scripts with ``args`` (the runner's layout) and save the results."""
    sources = list(sources)
    if not sources:
        raise ExtrasError("image: no image to process")
    result = ExtrasResult()
    if state is not None:
        state.job_count = len(sources)
    for index, source in enumerate(sources):
        if state is not None:
            if state.interrupted:
                break
            state.job_no, state.textinfo = index, f"Extras {index + 1}/{len(sources)}"
        parameters, existing = images.read_info_from_image(source.image)
        kept = {k: v for k, v in existing.items() if isinstance(v, str)}
        if parameters:
            kept["parameters"] = parameters
        pp = PostprocessedImage(source.image.convert("RGB"))
        runner.run(pp, args)
        text = make_infotext(pp.info)
        used: dict[str, int] = {}
        for picture in (pp.image, *pp.extra_images):
            picture.info = {**kept, "extras": text} if text else dict(kept)
            if save:
                basename = images.sanitize_filename_part(Path(source.name).stem) if source.name else ""
                fullfn, _ = images.save_image(picture, outdir, basename, extension=opts.samples_format,
                                              info=text or None, pnginfo_section_name="extras", existing_info=kept,
                                              opts=opts, save_to_dirs=False, suffix=pp.get_suffix(used))
                result.files.append(fullfn)
            result.images.append(picture)
            result.infotexts.append(text)
    runner.postprocess(result.files)
    return result
