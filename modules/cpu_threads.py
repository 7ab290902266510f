"""How many torch CPU threads a job uses, chosen from the size of its work.

Small UNet calls (the 64-px default model) are dominated by per-operator costs: splitting them over two threads adds
the threads' hand-over to every one of the UNet's ~500 operators and makes a job slower (measured: 0.64 s with two
threads against 0.44 s with one, on a quiet 2-core machine; on a machine that is busy with other work, 2–10x slower).
Large calls (SD-size models at 256² and up) gain from every core. So each job runs with one thread when one UNet call
of it is small, and with ``configure()``'s maximum (``--threads``, else torch's default: the physical cores)
otherwise; the previous count is restored after the job.

"Small" is estimated as UNet parameters x latent pixels x CFG batch (a multiply-add count up to a constant that is
alike for every SD UNet): the default model at 64² is ~3e9, SD1.5 at 256² ~2e12.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

SMALL_WORK = 3e10
"""Below this (the default model up to ~192², tiny test models), a job runs on one thread."""

_maximum: int | None = None
_default = torch.get_num_threads()  # torch's own count, before any job changed it


def configure(threads: int | None) -> None:
    """The most threads a job may use (``--threads``); None: torch's default count."""
    global _maximum
    _maximum = threads if threads and threads > 0 else None


def maximum() -> int:
    return _maximum or _default


def unet_parameters(unet: Any) -> int:
    """Parameters of a UNet, counted once per module object."""
    count = getattr(unet, "_cpu_threads_parameters", None)
    if count is None:
        count = sum(p.numel() for p in unet.parameters())
        try:
            unet._cpu_threads_parameters = count
        except (AttributeError, TypeError):
            pass
    return count


def work_of(model: Any, width: int, height: int, batch: int) -> float:
    """Estimated work of one UNet call of a job: parameters x latent pixels x (cond + uncond) batch."""
    f = getattr(model, "vae_scale_factor", 8) or 8
    return float(unet_parameters(model.unet)) * (width // f) * (height // f) * 2 * max(1, batch)


def threads_for(model: Any, width: int, height: int, batch: int) -> int:
    if model is None or getattr(model, "unet", None) is None or getattr(model, "device", torch.device("cpu")).type != "cpu":
        return maximum()
    return 1 if work_of(model, width, height, batch) < SMALL_WORK else maximum()


@contextlib.contextmanager
def for_job(model: Any, width: int, height: int, batch: int) -> Iterator[int]:
    """Run the block with the job's thread count (see the module's docstring); restores the count it found."""
    before = torch.get_num_threads()
    wanted = threads_for(model, width, height, batch)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def describe() -> str:
    return f"1 thread when parameters x latent pixels x CFG batch < {SMALL_WORK:.0e}, else {maximum()}"
