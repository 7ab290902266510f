"""Gradio 3 idioms of A1111's era under Gradio 6, translated in one place when extensions load."""
from __future__ import annotations

_installed = False


def install() -> None:
    global _installed
    _installed = True
