"""Shared fixtures: tiny random-weight checkpoints of every family, built once per session, loaded fully offline.

- ``tiny_configs_dir``: tiny config folders named like the shipped ones (``sd15``, ``sd21``, ``sd21-base``, ``sdxl``,
  ``sdxl-refiner``); pass it first in ``ModelManager(configs_dirs=...)``.
- ``tiny_models_dir``: a data dir (``Paths.from_args(data_dir=...)``) whose ``models/Stable-diffusion`` holds
  ``sd1.safetensors``, ``sd1-legacy.ckpt``, ``sd2-v.safetensors``, ``sdxl.safetensors``, ``sdxl-refiner.safetensors``,
  ``inpaint/sd1-inpainting.safetensors`` and the diffusers folder ``sd1-diffusers``. Treat it as read-only.
- ``make_manager(data_dir, extra_configs=(), **options)``: a ``ModelManager`` over a data dir that finds the tiny
  configs (and ``extra_configs`` first), with the given options set.
- ``shipped_model``: the shipped default model, loaded through the checkpoint path (the test is skipped without
  one). Shared by the whole session: do not modify it.
- ``tiny_sd1_model``: a loaded tiny SD1 ``SDModel`` (64 px native, f=4 VAE, 32-wide text encoder, real tokenizer,
  PNDM epsilon scheduler).
  Shared by the whole session: do not modify it.
"""
from __future__ import annotations

import os
import tempfile

# Never touch the network or a user's Hugging Face cache, whatever the environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="empty-hf-home-")

from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from modules import cpu_threads  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import CONFIGS_DIR, Paths  # noqa: E402
from modules.sd_models import ModelManager, SDModel  # noqa: E402
from tests.fixtures_models import (  # noqa: E402
    SHIPPED, build_tiny, ldm_state_dict, paths_with_shipped_models, write_checkpoint, write_diffusers_folder,
    write_tiny_configs,
)

torch.set_num_threads(1)
# Jobs on small models run on one thread (modules/cpu_threads.py); tests compare job results bit for bit with work
# done outside a job (decodes, diffusers' pipeline), so everything runs on one thread. tests/test_cpu_threads.py
# checks the choice itself.
cpu_threads.configure(1)

TINY_CHECKPOINTS = {
    # file name under models/Stable-diffusion: (family, build options, safetensors metadata)
    "sd1.safetensors": ("sd1", {}, None),
    "sd2-v.safetensors": ("sd2", {}, {"prediction_type": "v"}),
    "sdxl.safetensors": ("sdxl", {}, None),
    "sdxl-refiner.safetensors": ("sdxl-refiner", {}, None),
    "inpaint/sd1-inpainting.safetensors": ("sd1", {"inpaint": True}, None),
}


@pytest.fixture(scope="session")
def tiny_configs_dir(tmp_path_factory) -> Path:
    return write_tiny_configs(tmp_path_factory.mktemp("tiny-configs"))


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("tiny-data")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    for name, (family, options, metadata) in TINY_CHECKPOINTS.items():
        write_checkpoint(build_tiny(family, **options), ckpt_dir / name, metadata)
    torch.save(ldm_state_dict(build_tiny("sd1")), ckpt_dir / "sd1-legacy.ckpt")
    write_diffusers_folder(build_tiny("sd1"), ckpt_dir / "sd1-diffusers")
    Paths.from_args(data_dir=data_dir).vae_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


@pytest.fixture(scope="session")
def make_manager(tiny_configs_dir) -> Callable[..., ModelManager]:
    def make(data_dir: Path, extra_configs: tuple[Path, ...] = (), **options) -> ModelManager:
        paths = Paths.from_args(data_dir=data_dir)
        opts = Options.load(paths.config_file)
        for key, value in options.items():
            opts.set(key, value)
        return ModelManager(paths, opts, configs_dirs=(*extra_configs, tiny_configs_dir, CONFIGS_DIR))
    return make


@pytest.fixture(scope="session")
def tiny_sd1_model(tiny_models_dir, make_manager) -> SDModel:
    return make_manager(tiny_models_dir).load("sd1.safetensors")


@pytest.fixture(scope="session")
def shipped_model(tmp_path_factory) -> SDModel:
    if not SHIPPED:
        pytest.skip("no shipped model")
    return ModelManager(paths_with_shipped_models(tmp_path_factory.mktemp("shipped")), Options()).select_default()


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module that trains: the small models' kernels gain nothing from two, and a second
    thread stalls every op when the machine's cores are busy. Use with ``pytest.mark.usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
