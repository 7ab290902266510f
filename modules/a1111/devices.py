"""A1111's ``modules.devices``: the torch device and dtypes the app runs on, and freeing memory."""
from __future__ import annotations

import contextlib
import gc
from typing import Any

import torch

cpu = torch.device("cpu")
dtype = torch.float32            # the app runs its models in float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False


def get_optimal_device() -> torch.device:
    """The device the running app uses (``--device``), else cuda when there is one, else the CPU."""
    from modules import shared

    runtime = shared.runtime
    if runtime is not None and runtime.device is not None:
        return torch.device(runtime.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def get_optimal_device_name() -> str:
    return str(get_optimal_device())


def get_device_for(task: str) -> torch.device:
    return get_optimal_device()


def torch_gc() -> None:
    """Collect garbage and give cached CUDA memory back."""
    gc.collect()
    if torch.cuda.is_available():
        with torch.cuda.device(torch.cuda.current_device()):
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()


def cond_cast_unet(x: torch.Tensor) -> torch.Tensor:
    return x.to(dtype_unet) if unet_needs_upcast else x


def cond_cast_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if unet_needs_upcast else x


def randn(seed: int, shape: Any, generator: Any = None) -> torch.Tensor:
    """Noise for ``seed`` as the app makes it (always on the CPU, so seeds reproduce on every device)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen, device="cpu").to(get_optimal_device())


def randn_without_seed(shape: Any, generator: Any = None) -> torch.Tensor:
    return torch.randn(shape, device="cpu", generator=generator).to(get_optimal_device())


def autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """The app computes in float32, so there is nothing to autocast."""
    return contextlib.nullcontext()


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x: torch.Tensor, where: str) -> None:
    if torch.isnan(x).all():
        raise NansException(f"A tensor with all NaNs was produced in {where}.")


def __getattr__(name: str) -> Any:
    if name == "device" or name.startswith("device_"):   # device, device_interrogate, device_gfpgan, ...
        return get_optimal_device()
    from modules.a1111.missing import attribute_error

    raise attribute_error(__name__, name)
