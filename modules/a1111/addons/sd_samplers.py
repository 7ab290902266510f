"""A1111 names of ``modules.sd_samplers``."""
from __future__ import annotations

from typing import Any

from modules.sd_samplers import samplers, visible_sampler_names

all_samplers = samplers
samplers_for_img2img = samplers
samplers_map = {alias.lower(): s.name for s in samplers for alias in (s.name, *s.aliases)}
all_samplers_map = {s.name: s for s in samplers}


def visible_samplers() -> list[Any]:
    return [s for s in samplers if s.name in visible_sampler_names()]


def find_sampler_config(name: str) -> Any:
    return all_samplers_map.get(name) if name is not None else samplers[0]


def create_sampler(name: str, model: Any) -> Any:
    """A1111 returns a k-diffusion sampler object wrapping the model's internals; samplers here are diffusers
    schedulers driven by the app's sampling loop, so there is no such object."""
    raise NotImplementedError(
        f"modules.sd_samplers.create_sampler({name!r}): A1111's k-diffusion sampler objects are an A1111 internal "
        "this web UI does not provide (its samplers are diffusers schedulers)")
