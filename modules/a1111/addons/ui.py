"""A1111 names of ``modules.ui``: the symbols of its small buttons."""
from __future__ import annotations

random_symbol = "\U0001f3b2\ufe0f"      # 🎲️
reuse_symbol = "\u267b\ufe0f"           # ♻️
paste_symbol = "\u2199\ufe0f"           # ↙
refresh_symbol = "\U0001f504"           # 🔄
save_style_symbol = "\U0001f4be"        # 💾
apply_style_symbol = "\U0001f4cb"       # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001F3B4"    # 🎴
switch_values_symbol = "\U000021C5"     # ⇅
restore_progress_symbol = "\U0001F300"  # 🌀
detect_image_size_symbol = "\U0001F4D0"  # 📐


def __getattr__(name: str):  # noqa: ANN202
    """A1111's ``modules.ui`` re-exports these of ``ui_common``."""
    if name in ("create_refresh_button", "plaintext_to_html"):
        from modules.a1111 import ui_common

        return getattr(ui_common, name)
    raise AttributeError(name)
