"""A1111's ``modules.sd_hijack``: A1111 patches the model's modules in place; the app does not (its prompt encoding,
embeddings and attention are its own code), so ``model_hijack`` only reports what the app has."""
from __future__ import annotations

from typing import Any


def _loaded_embeddings() -> Any:
    from modules import shared

    rt = shared.runtime
    model = rt.models.current if rt is not None else None
    return rt.embeddings.loaded_for(model) if model is not None else None


class _EmbeddingDatabase:
    """``model_hijack.embedding_db``: the textual-inversion embeddings loaded for the current model."""

    @property
    def word_embeddings(self) -> dict[str, Any]:
        """Trigger word -> embedding file."""
        loaded = _loaded_embeddings()
        return dict(loaded.files) if loaded is not None else {}

    @property
    def skipped_embeddings(self) -> dict[str, Any]:
        """Files that could not be read -> why."""
        loaded = _loaded_embeddings()
        return dict(loaded.errors) if loaded is not None else {}

    def load_textual_inversion_embeddings(self, force_reload: bool = False) -> None:
        """With ``force_reload``, read the embeddings folder again at the next generation."""
        from modules import shared

        if force_reload and shared.runtime is not None:
            shared.runtime.embeddings.refresh()


class StableDiffusionModelHijack:
    fixes = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method = None
    extra_generation_params: dict[str, Any] = {}
    comments: list[str] = []

    def __init__(self) -> None:
        self.embedding_db = _EmbeddingDatabase()

    def hijack(self, m: Any) -> None:
        """Nothing to patch: the app's model code has the features A1111 adds by patching."""

    def undo_hijack(self, m: Any) -> None:
        """Nothing was patched."""

    def apply_optimizations(self, option: Any = None) -> None:
        """Attention is chosen by diffusers' attention processors."""

    def clear_comments(self) -> None:
        self.comments = []
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()
