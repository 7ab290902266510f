"""A1111 names of ``modules.processing`` that it does not define itself (it owns its A1111 surface; a name defined
there wins over the one here)."""
from __future__ import annotations

from typing import Any

from modules import rng


def get_fixed_seed(seed: int | str | None) -> int:
    return rng.fixed_seed(seed)


def fix_seed(p: Any) -> None:
    """Replace ``-1`` seeds of ``p`` by the random seeds the job will use (A1111's ``fix_seed``)."""
    p.seed = rng.fixed_seed(p.seed)
    p.subseed = rng.fixed_seed(p.subseed)
