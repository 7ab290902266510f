"""A1111's ``modules.safe``: loading ``.pt`` / ``.ckpt`` pickles without running untrusted code.

A1111 checks pickles with its own restricted unpickler and keeps the original ``torch.load`` as
``unsafe_torch_load`` (extensions swap it in to load their model files). Here both names load with torch's
``weights_only=True`` unpickler (tensors, numbers, containers): this web UI never unpickles arbitrary objects, so a
file that needs more fails with torch's error naming the object it refused."""
from __future__ import annotations

from typing import Any


def load(filename: Any, *args: Any, **kwargs: Any) -> Any:
    import torch

    kwargs["weights_only"] = True
    return torch.load(filename, *args, **kwargs)


unsafe_torch_load = load
