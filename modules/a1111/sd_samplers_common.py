"""A1111's ``modules.sd_samplers_common``: sampler records and the live-preview hook of a sampling loop."""
from __future__ import annotations

from typing import Any

from modules.sd_samplers import SamplerData  # noqa: F401 - A1111 name


def store_latent(decoded: Any) -> None:
    """A1111 keeps the latest latent for the live preview. The app's sampling loop makes its own previews, so a
    latent stored by an extension is kept on the running job's state only (``state.current_latent``)."""
    from modules import shared

    shared.state.current_latent = decoded


def images_tensor_to_samples(*args: Any, **kwargs: Any) -> Any:
    from modules.a1111.missing import attribute_error

    raise attribute_error(__name__, "images_tensor_to_samples")
