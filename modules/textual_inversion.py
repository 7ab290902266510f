"""Textual-inversion embeddings (``models/embeddings``): read the files and find their trigger words in prompts.

The trigger word is the file name without its extension, as in A1111 (``bad-hands-5.pt`` -> ``bad-hands-5``). Files
found in sub-folders count too. Readable formats:

- A1111 ``.pt`` / ``.bin``: ``{"string_to_param": {"*": [n, C]}, "step", "sd_checkpoint", "sd_checkpoint_name"}``;
  pickles are only ever opened with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
  containers;
- ``.safetensors``: ``emb_params`` ``[n, C]`` (kohya), ``string_to_param.*``, or SDXL's ``clip_l`` ``[n, 768]`` +
  ``clip_g`` ``[n, 1280]``;
- diffusers ``learned_embeds.bin`` / ``.safetensors``: a single ``{"<token>": [C] or [n, C]}`` entry.

An embedding is loaded when it has vectors of the right width for every text encoder of the model (SDXL: both),
otherwise it is listed as skipped. ``EmbeddingDatabase`` is the ``EmbeddingLookup`` that ``modules.conditioning``
takes as ``embeddings=``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from modules.conditioning import Embedding, TextModel, prompt_tokenizer

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
ENCODER_KEYS = ("text_encoder", "text_encoder_2")


def _as_matrix(tensor: Any, path: Path) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2):
        raise ValueError(f"{path.name}: expected a [n, C] tensor of vectors")
    return tensor.detach().float().reshape(-1, tensor.shape[-1])


def _metadata(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    return value if isinstance(value, (int, str)) else None


def read_embedding_file(path: Path) -> Embedding:
    """The embedding in ``path``, its vectors keyed by encoder (``text_encoder``, ``text_encoder_2``).

    Raises ``ValueError`` for a file in no known format (and whatever the loaders raise for a broken one).
    """
    if path.suffix == ".safetensors":
        data: dict[str, Any] = load_file(path)
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a textual-inversion embedding")

    name = path.stem
    info = {key: _metadata(data, key) for key in ("step", "sd_checkpoint", "sd_checkpoint_name")}
    if "clip_l" in data and "clip_g" in data:
        vectors = {"text_encoder": _as_matrix(data["clip_l"], path), "text_encoder_2": _as_matrix(data["clip_g"], path)}
        if vectors["text_encoder"].shape[0] != vectors["text_encoder_2"].shape[0]:
            raise ValueError(f"{path.name}: clip_l and clip_g have different numbers of vectors")
        return Embedding(name, vectors, **info)
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise ValueError(f"{path.name}: string_to_param must hold exactly one tensor")
        return Embedding(name, {"text_encoder": _as_matrix(next(iter(params.values())), path)}, **info)
    if "string_to_param.*" in data:  # an A1111 embedding saved as safetensors
        key = "string_to_param.*"
    elif "emb_params" in data:  # kohya
        key = "emb_params"
    elif len(data) == 1:  # diffusers: {"<token>": vectors}
        key = next(iter(data))
    else:
        raise ValueError(f"{path.name}: not a textual-inversion embedding (unknown format)")
    return Embedding(name, {"text_encoder": _as_matrix(data[key], path)})


def _encoder_width(encoder: torch.nn.Module) -> int:
    return encoder.get_input_embeddings().weight.shape[1]


class EmbeddingDatabase:
    """The embeddings usable with one model, looked up by the token ids of their trigger words."""

    def __init__(self) -> None:
        self.word_embeddings: dict[str, Embedding] = {}
        """Loaded embeddings by trigger word (A1111's name)."""
        self.skipped_embeddings: dict[str, Embedding] = {}
        """Readable embeddings that do not fit the model (wrong vector width or missing encoder vectors)."""
        self._by_first_token: dict[int, list[tuple[list[int], Embedding]]] = {}

    def load_directory(self, directory: Path, model: TextModel) -> None:
        """Replace the contents with the embedding files under ``directory`` that fit ``model``.

        Unreadable files are logged and left out; when two files share a name the later path (sorted) wins.
        """
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self._by_first_token.clear()
        paths = sorted(p for p in directory.rglob("*") if p.suffix in EMBEDDING_SUFFIXES and p.is_file()) \
            if directory.is_dir() else []
        for path in paths:
            try:
                embedding = read_embedding_file(path)
            except Exception as error:  # a broken or foreign file must not stop the others
                log.warning("textual inversion: skipping %s: %s", path, error)
                continue
            self.add(embedding, model)

    def add(self, embedding: Embedding, model: TextModel) -> bool:
        """Register ``embedding`` if its vectors fit ``model``'s encoders; returns whether it was loaded."""
        encoders = {key: getattr(model, key) for key in ENCODER_KEYS if getattr(model, key) is not None}
        fits = all(key in embedding.vectors and embedding.vectors[key].shape[1] == _encoder_width(encoder)
                   for key, encoder in encoders.items())
        trigger = prompt_tokenizer(model)(embedding.name, add_special_tokens=False)["input_ids"]
        if not fits or not trigger:
            self.skipped_embeddings[embedding.name] = embedding
            self.word_embeddings.pop(embedding.name, None)
            return False
        self.skipped_embeddings.pop(embedding.name, None)
        self.word_embeddings[embedding.name] = embedding
        candidates = [entry for entry in self._by_first_token.get(trigger[0], []) if entry[1].name != embedding.name]
        candidates.append((trigger, embedding))
        candidates.sort(key=lambda entry: len(entry[0]), reverse=True)  # longest trigger first
        self._by_first_token[trigger[0]] = candidates
        return True

    def find(self, tokens: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        """The embedding whose trigger word's tokens start at ``tokens[offset]``, and the trigger's token count."""
        for trigger, embedding in self._by_first_token.get(tokens[offset], []):
            if list(tokens[offset:offset + len(trigger)]) == trigger:
                return embedding, len(trigger)
        return None

    def api_listing(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``/sdapi/v1/embeddings``: ``{"loaded": {name: info}, "skipped": {name: info}}`` as A1111 returns it."""

        def info(embedding: Embedding) -> dict[str, Any]:
            return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
                    "sd_checkpoint_name": embedding.sd_checkpoint_name,
                    "shape": sum(vectors.shape[1] for vectors in embedding.vectors.values()),
                    "vectors": embedding.length}

        return {"loaded": {name: info(e) for name, e in self.word_embeddings.items()},
                "skipped": {name: info(e) for name, e in self.skipped_embeddings.items()}}
