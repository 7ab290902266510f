"""A1111's ``modules.sd_schedulers``: the schedule types, from the app's sampler table."""
from __future__ import annotations

from dataclasses import dataclass, field

from modules import sd_samplers


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    function: object = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list[str] = field(default_factory=list)


schedulers = [Scheduler(s.name, s.label, aliases=list(s.aliases)) for s in sd_samplers.schedulers]
schedulers_map = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
