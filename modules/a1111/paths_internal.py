"""A1111's ``modules.paths_internal``: the folders of the running app (its data dir when one is bound)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modules.paths import REPO_ROOT

script_path = str(REPO_ROOT)
modules_path = str(REPO_ROOT / "modules")
extensions_builtin_dir = str(REPO_ROOT / "modules" / "builtin_scripts")
sd_configs_path = str(REPO_ROOT / "modules" / "configs")
default_sd_model_file = ""


def _paths() -> Any:
    from modules import shared

    runtime = shared.runtime
    if runtime is not None:
        return runtime.paths
    from modules.paths import Paths

    return Paths.from_args()


def __getattr__(name: str) -> Any:
    """Folders that depend on ``--data-dir``: read from the running app each time."""
    paths = _paths()
    values = {
        "data_path": paths.data_dir,
        "models_path": paths.data_dir / "models",
        "extensions_dir": paths.extensions_dir,
        "config_states_dir": paths.data_dir / "config_states",
        "default_output_dir": paths.outputs_dir,
    }
    if name in values:
        return str(values[name])
    from modules.a1111.missing import attribute_error

    raise attribute_error(__name__, name)


def mkdir(path: str | Path) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
