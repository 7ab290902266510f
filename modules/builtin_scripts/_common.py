"""What the built-in scripts share: copies of ``p``, validated field changes, seeds, checkpoints, results, grids."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from PIL import Image
from pydantic import ValidationError

from modules import images, shared
from modules.processing import GenerationError, Processed, StableDiffusionProcessing, _outdir
from modules.sd_models import CheckpointLoadError, CheckpointNotFoundError


def copy_processing(p: StableDiffusionProcessing) -> StableDiffusionProcessing:
    """A copy of ``p`` for one sub-job: same model, state and scripts, its own mutable parameters."""
    copy = p.model_copy()
    copy.extra_generation_params = dict(p.extra_generation_params)
    copy.override_settings = dict(p.override_settings)
    copy.comments = dict(p.comments)
    copy.styles = list(p.styles)
    copy.script_args = list(p.script_args)
    copy.attention_controllers = list(p.attention_controllers)
    return copy


def set_field(p: StableDiffusionProcessing, name: str, value: Any) -> None:
    """Validated assignment of a parameter; a bad value raises ``GenerationError`` naming the parameter."""
    try:
        type(p).__pydantic_validator__.validate_assignment(p, name, value)
    except ValidationError as e:
        raise GenerationError(f"{value!r} is not a valid {name}: {e.errors()[0]['msg']}") from None


def _model_manager(what: str) -> Any:
    runtime = shared.runtime
    if runtime is None:
        raise GenerationError(f"{what}: checkpoints can only be switched in the running app")
    return runtime.models


def find_checkpoint(name: str, what: str) -> None:
    """Check that checkpoint ``name`` exists (title, file name or hash) without loading it."""
    try:
        _model_manager(what).get_info(name)
    except CheckpointNotFoundError as e:
        raise GenerationError(f"{what}: {e}") from None


def load_checkpoint(name: str, what: str) -> Any:
    """Make checkpoint ``name`` current through the app's model manager and return it."""
    try:
        return _model_manager(what).load(name)
    except (CheckpointNotFoundError, CheckpointLoadError) as e:
        raise GenerationError(f"{what}: {e}") from None


def checkpoint_titles() -> list[str]:
    runtime = shared.runtime
    return [c.title for c in runtime.models.list_checkpoints()] if runtime is not None else []


@contextlib.contextmanager
def restoring_model(p: StableDiffusionProcessing) -> Iterator[None]:
    """Make the checkpoint that was current before the block current again (and ``p``'s model) if the block
    switched it: the manager may have released it meanwhile, so it is loaded by name."""
    runtime = shared.runtime
    previous = runtime.models.current if runtime is not None else None
    try:
        yield
    finally:
        if previous is not None and runtime.models.current is not previous:
            p.sd_model = runtime.models.load(previous.sd_checkpoint_info.title)


def interrupted_result(p: StableDiffusionProcessing) -> Processed:
    """A script's result when the job was interrupted before its first image."""
    return Processed(p=p, images=[], infotexts=[], seed=int(p.seed), all_seeds=[], all_subseeds=[], all_prompts=[],
                     all_negative_prompts=[], interrupted=True)


def own_images(processed: Processed) -> tuple[list[Image.Image], list[str]]:
    """A sub-job's images and infotexts without the batch grid ``process_images`` puts first."""
    first = processed.index_of_first_image
    return processed.images[first:], processed.infotexts[first:]


def save_grid(p: StableDiffusionProcessing, grid: Image.Image, basename: str, info: str, seed: int,
              prompt: str) -> list[str]:
    """Attach ``info`` to the grid and save it like ``process_images`` saves its grids; returns the saved files."""
    opts = p.opts
    if opts.enable_pnginfo:
        grid.info["parameters"] = info
    if not opts.grid_save or p.do_not_save_grid:
        return []
    fullfn, _ = images.save_image(grid, _outdir(p, grid=True), basename, seed, prompt, opts.grid_format, info=info,
                                  grid=True, p=p, opts=opts)
    return [fullfn]
