"""A1111's ``modules.shared_items``: choices for settings dropdowns."""
from __future__ import annotations

from typing import Any


def realesrgan_models_names() -> list[str]:
    return []


def postprocessing_scripts() -> list[Any]:
    return []


def sd_vae_items() -> list[str]:
    from modules.a1111._runtime import models

    return ["Automatic", "None", *(vae.name for vae in models().list_vaes())]


def refresh_vae_list() -> None:
    from modules.a1111._runtime import models

    models().refresh()


def cross_attention_optimizations() -> list[str]:
    return ["Automatic"]


def sd_unet_items() -> list[str]:
    return ["Automatic"]


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    from modules.a1111._runtime import models

    return [info.title for info in models().list_checkpoints()]


def refresh_checkpoints() -> None:
    from modules.a1111._runtime import models

    models().refresh()


def list_samplers() -> list[Any]:
    from modules import sd_samplers

    return list(sd_samplers.samplers)


def get_infotext_names() -> list[str]:
    from modules.infotext import parse_generation_parameters

    return list(parse_generation_parameters("x\nSteps: 1, Sampler: Euler, Seed: 1"))


def ui_reorder_categories() -> list[str]:
    return ["prompt", "image", "inpaint", "sampler", "accordions", "checkboxes", "dimensions", "cfg", "denoising",
            "seed", "batch", "override_settings", "scripts"]
