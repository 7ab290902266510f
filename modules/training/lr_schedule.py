"""A1111's learning-rate schedule syntax: ``"0.005:100, 1e-3:1000, 1e-5"``.

Comma-separated entries ``rate:step``: the rate is used up to and including training step ``step`` (steps count from
1), then the next entry takes over. Only the last entry may leave out its step; it then runs until the run's
``max_steps``. A schedule whose last entry names a step below ``max_steps`` ends training there, as in A1111. A plain
number (``"0.005"``) is a constant rate. The same syntax serves A1111's gradient-clipping value.

Everything is checked before training starts: a schedule that does not parse is a ``ValueError`` naming the field.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LearnRatePhase:
    rate: float
    end_step: int
    """The last step (1-based, inclusive) trained at ``rate``."""


def _parse_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"{text!r} must be a positive number")
    return rate


def _parse_step(text: str) -> int:
    try:
        step = int(text)
    except ValueError:
        raise ValueError(f"step {text!r} is not a whole number") from None
    if step <= 0:
        raise ValueError(f"step {text!r} must be positive")
    return step


def parse_learn_rate(text: str, max_steps: int, *, field: str = "learn_rate") -> list[LearnRatePhase]:
    """The phases of ``text`` for a run of ``max_steps`` steps; phases past ``max_steps`` are cut off.

    >>> [(p.rate, p.end_step) for p in parse_learn_rate("0.005:100, 1e-3:1000, 1e-5", 2000)]
    [(0.005, 100), (0.001, 1000), (1e-05, 2000)]

    Raises ``ValueError`` starting with ``field`` for a schedule that does not parse (all of it is checked, also
    the entries a short run never reaches).
    """
    entries = [entry.strip() for entry in str(text).split(",")]
    if not any(entries):
        raise ValueError(f"{field}: the schedule is empty; give a rate such as 0.005 or '0.005:100, 1e-3'")
    phases: list[LearnRatePhase] = []
    for index, entry in enumerate(entries):
        where = f"{field}: entry {index + 1} ({entry!r}) of {text!r}"
        rate_text, colon, step_text = entry.partition(":")
        try:
            rate = _parse_rate(rate_text.strip())
            if colon:
                end_step = _parse_step(step_text.strip())
            elif index == len(entries) - 1:
                end_step = max(max_steps, phases[-1].end_step + 1 if phases else 1)
            else:
                raise ValueError("only the last entry may leave out its step (write rate:step)")
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if phases and end_step <= phases[-1].end_step:
            raise ValueError(f"{where}: step {end_step} must come after step {phases[-1].end_step}")
        phases.append(LearnRatePhase(rate, end_step))
    needed = next(i for i, phase in enumerate(phases) if phase.end_step >= max_steps or i == len(phases) - 1)
    return [LearnRatePhase(phase.rate, min(phase.end_step, max_steps)) for phase in phases[:needed + 1]]


class LearnRateSchedule:
    """A parsed schedule: ``rate_at(step)`` and iteration over ``(rate, end_step)`` pairs."""

    def __init__(self, text: str, max_steps: int, *, field: str = "learn_rate") -> None:
        self.text = text
        self.phases = parse_learn_rate(text, max_steps, field=field)

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return ((phase.rate, phase.end_step) for phase in self.phases)

    @property
    def last_step(self) -> int:
        """The step training stops at (``max_steps``, or earlier when the schedule ends earlier)."""
        return self.phases[-1].end_step

    def rate_at(self, step: int) -> float:
        """The rate of training step ``step`` (1-based); the last rate past the schedule's end."""
        for phase in self.phases:
            if step <= phase.end_step:
                return phase.rate
        return self.phases[-1].rate
