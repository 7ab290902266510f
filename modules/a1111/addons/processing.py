"""A1111 names of ``modules.processing`` that it does not define itself (it owns its A1111 surface; a name defined
there wins over the one here)."""
from __future__ import annotations

from modules.builtin_scripts._common import fix_seed  # noqa: F401 - A1111 name: -1 seeds of p made concrete
from modules.rng import fixed_seed as get_fixed_seed  # noqa: F401 - A1111 name
