"""A1111's ``modules.ui_components``: small layout helpers over Gradio components, each rendered by the Gradio
component it extends (``get_block_name``)."""
from __future__ import annotations

from typing import Any

import gradio as gr


def _with_class(kwargs: dict[str, Any], css_class: str) -> dict[str, Any]:
    classes = kwargs.pop("elem_classes", None) or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    return {**kwargs, "elem_classes": [css_class, *classes]}


class FormComponent:
    def get_expected_parent(self) -> Any:
        return FormRow

from gradio.events import Dependency

class ToolButton(gr.Button, FormComponent):
    """A small square button with an icon, beside a field."""

    def __init__(self, value: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **_with_class(kwargs, "tool"))

    def get_block_name(self) -> str:
        return "button"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class ResizeHandleRow(gr.Row):
    """A row whose columns the user can resize (A1111 adds a drag handle in page JS)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**_with_class(kwargs, "resize-handle-row"))

    def get_block_name(self) -> str:
        return "row"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class FormRow(gr.Row):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**_with_class(kwargs, "form"))

    def get_block_name(self) -> str:
        return "row"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class FormColumn(gr.Column):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**_with_class(kwargs, "form"))

    def get_block_name(self) -> str:
        return "column"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class FormGroup(gr.Group):
    def get_block_name(self) -> str:
        return "group"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class FormHTML(gr.HTML, FormComponent):
    def get_block_name(self) -> str:
        return "html"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class FormColorPicker(gr.ColorPicker, FormComponent):
    def get_block_name(self) -> str:
        return "colorpicker"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class DropdownMulti(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "multiselect": True})

    def get_block_name(self) -> str:
        return "dropdown"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class DropdownEditable(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "allow_custom_value": True})

    def get_block_name(self) -> str:
        return "dropdown"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class InputAccordion(gr.Checkbox):
    """A checkbox shown as an accordion: open means checked. ``with InputAccordion(False, label="X") as enabled:``
    lays out its contents inside; ``enabled``'s value (and ``.change``) is whether the user turned it on.

    The accordion carries the checkbox as its first row (labelled "Enable"), so the value is visible and editable
    without page JavaScript; opening or closing the accordion sets it."""

    global_index = 0

    def __init__(self, value: bool = False, **kwargs: Any) -> None:
        InputAccordion.global_index += 1
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{InputAccordion.global_index}"
        label = kwargs.pop("label", "")
        kwargs.pop("open", None)
        self.accordion = gr.Accordion(label, open=bool(value), elem_id=f"{self.accordion_id}-accordion",
                                      elem_classes=["input-accordion"])
        with self.accordion:
            super().__init__(value, label="Enable", **{**kwargs, "elem_id": self.accordion_id})
        self.accordion.expand(lambda: True, None, self, show_progress="hidden", queue=False)
        self.accordion.collapse(lambda: False, None, self, show_progress="hidden", queue=False)

    def get_block_name(self) -> str:
        return "checkbox"

    def extra(self) -> gr.Column:
        """A column beside the accordion's title in A1111; here the first row of its contents."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", min_width=0)

    def __enter__(self) -> "InputAccordion":
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.accordion.__exit__(exc_type, exc_val, exc_tb)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component