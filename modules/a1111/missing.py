"""Errors that say exactly which A1111 name this web UI does not provide."""
from __future__ import annotations

import importlib
import importlib.abc
import re
import sys
from types import ModuleType

NOTE = "an A1111 name this web UI does not provide"


def attribute_error(module: str, name: str) -> AttributeError:
    """``modules.shared has no attribute 'foo' (an A1111 name this web UI does not provide)``."""
    return AttributeError(f"{module} has no attribute {name!r} ({NOTE})", name=name)


class _MissingModuleFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: an import of ``modules.<x>`` that no other finder found fails with a message that
    names the A1111 module (still a ``ModuleNotFoundError``, so ``try: import ... except ImportError`` works)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if fullname.startswith("modules.") and fullname.count(".") == 1:
            raise ModuleNotFoundError(f"No module named {fullname!r} ({NOTE})", name=fullname)
        if fullname in A1111_REPOSITORIES:
            raise ModuleNotFoundError(f"No module named {fullname!r} ({A1111_REPOSITORIES[fullname]})", name=fullname)
        return None


# Code A1111 clones next to itself (its "repositories") and extensions import for model internals.
A1111_REPOSITORIES = {
    "k_diffusion": "A1111's k-diffusion samplers; this web UI samples with diffusers schedulers",
    "ldm": "A1111's original Stable Diffusion model code; this web UI runs models through diffusers",
    "sgm": "A1111's SDXL model code (generative-models); this web UI runs models through diffusers",
}

# Packages A1111's own requirements install that this web UI's environment does not have: a failure report that says
# one is missing says why (``describe``; imports and ``find_spec`` behave as usual).
A1111_PACKAGES = {
    "torchvision": "A1111 installs torchvision beside torch; no torchvision build matches this web UI's torch "
                   "2.13 CPU, so it cannot be installed here and an extension that needs it (ultralytics detection "
                   "models, torchvision transforms) cannot run",
    "cv2": "OpenCV, the opencv-python package A1111 installs; this web UI does not ship it",
    "ultralytics": "the YOLO detection package (it needs torchvision, which cannot be installed beside this web "
                   "UI's torch 2.13 CPU)",
}

_finder = _MissingModuleFinder()


def install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)


def install_package_getattr(package: ModuleType) -> None:
    """``from modules import x`` for an A1111 module this web UI lacks: an ``ImportError`` that names it (Python's
    own message would only say "cannot import name")."""
    if "__getattr__" in vars(package):
        return

    def __getattr__(name: str) -> ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{package.__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package.__name__}.{name}":
                raise
            raise ImportError(f"cannot import name {name!r} from {package.__name__!r}: {e}", name=name) from None

    package.__getattr__ = __getattr__


_CANNOT_IMPORT = re.compile(r"cannot import name '([^']+)' from '((?:modules(?:\.\w+)*)|launch)'")


def describe(exc: BaseException) -> str:
    """``exc`` as an extension's failure report shows it. Python's ``from modules.x import name`` error drops the
    module's own message, so an A1111 name missing from one of the app's modules is named here again."""
    text = f"{type(exc).__name__}: {exc}"
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and top in A1111_PACKAGES and A1111_PACKAGES[top] not in text:
        text += f" ({A1111_PACKAGES[top]})"
    match = _CANNOT_IMPORT.search(str(exc)) if isinstance(exc, ImportError) else None
    if match and NOTE not in text:
        text += f" ({NOTE})"
    return text
