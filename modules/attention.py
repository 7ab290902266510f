"""Seeing and steering the UNet's attention for one job, through diffusers attention processors.

A job's ``p.attention_controllers`` (filled by scripts, e.g. in ``process``) are handed every attention layer's
probabilities while the job samples:

- ``controlled(unet, controllers)`` installs a ``ControlledAttnProcessor`` on every attention module for the job and
  puts the UNet's own processors back afterwards (no library code is patched, so LoRA, embeddings, ``AND``, ``BREAK``
  and prompt editing keep working);
- each UNet call of the CFG step carries a ``UNetCall`` (step, rows of the batch, latent size) to the processors as
  ``cross_attention_kwargs``; a layer that no controller ``wants`` runs the UNet's own processor untouched;
- a wanted layer computes ``softmax(QKᵀ/√d)`` explicitly (diffusers' ``Attention.get_attention_scores``), shows it to
  the controllers as ``[rows, heads, queries, keys]``, which may record it or return an edited copy, and applies it;
- after the CFG combination, controllers may adjust the guided prediction (``after_cfg``: prompt-to-prompt's local
  blend).

The prompt side: ``prompt_tokens`` gives, for a prompt, where each of its tokens sits in the conditioning's key axis
(chunk ``c``, token ``j`` at ``77·c + 1 + j``) and which word it belongs to, tokenized exactly as
``modules.conditioning`` does (emphasis, BREAK, textual-inversion embeddings).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from modules import conditioning, extra_networks, prompt_parser

CHUNK_TOKENS = conditioning.CHUNK_LENGTH + 2  # BOS + 75 + EOS


# ---------------------------------------------------------------------------------------------------------------------
# What controllers see
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One attention module of the UNet."""

    name: str          # e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    is_cross: bool     # attends to the prompt (attn2) rather than to the image itself (attn1)
    heads: int


@dataclass(frozen=True)
class UNetCall:
    """One UNet evaluation of the CFG step: which batch row is what."""

    step: int
    total_steps: int
    cond_rows: tuple[tuple[int, int], ...]  # (image, AND part) of each positive row, in batch order
    n_rows: int                             # positives, then one negative per image when CFG needs them
    latent_size: tuple[int, int]            # (height, width) of the latents

    def row(self, image: int, part: int = 0) -> int | None:
        """The batch row of image ``image``'s AND part ``part``."""
        try:
            return self.cond_rows.index((image, part))
        except ValueError:
            return None

    def uncond_row(self, image: int) -> int | None:
        n_cond = len(self.cond_rows)
        return n_cond + image if self.n_rows > n_cond else None

    def spatial(self, queries: int) -> tuple[int, int]:
        """(height, width) of a layer whose image tokens number ``queries``."""
        h, w = self.latent_size
        factor = math.sqrt(h * w / queries)
        return max(1, round(h / factor)), max(1, round(w / factor))

    @property
    def fraction(self) -> float:
        """How far through the sampling this call is, in [0, 1)."""
        return self.step / max(self.total_steps, 1)


class AttentionController:
    """Base class: override what you need."""

    def wants(self, layer: Layer) -> bool:
        """Whether to see this layer's probabilities at all (computing them explicitly costs memory)."""
        return False

    def wants_now(self, layer: Layer, call: UNetCall, queries: int) -> bool:
        """Whether to see a wanted layer in this call (``queries`` image tokens): skip steps and sizes not needed."""
        return True

    def edit(self, layer: Layer, call: UNetCall, probs: torch.Tensor) -> torch.Tensor | None:
        """``probs``: ``[rows, heads, queries, keys]``. Return a replacement, or None to leave them as they are."""
        return None

    def after_cfg(self, call: UNetCall, prediction: torch.Tensor) -> torch.Tensor:
        """The guided prediction ``[images, C, H, W]`` of this step; return it, changed or not."""
        return prediction


# ---------------------------------------------------------------------------------------------------------------------
# The processor and its installation
# ---------------------------------------------------------------------------------------------------------------------
class ControlledAttnProcessor:
    """Runs ``original`` unless a controller wants this layer; then attention with explicit probabilities."""

    def __init__(self, layer: Layer, original: Any, controllers: Sequence[AttentionController]) -> None:
        self.layer, self.original = layer, original
        self.controllers = [c for c in controllers if c.wants(layer)]

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 unet_call: UNetCall | None = None) -> torch.Tensor:
        queries = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        controllers = [c for c in self.controllers if c.wants_now(self.layer, unet_call, queries)] if unet_call else []
        if not controllers:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, keys, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, keys, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = probs.view(batch, attn.heads, *probs.shape[1:])
        for controller in controllers:
            edited = controller.edit(self.layer, unet_call, probs)
            if edited is not None:
                probs = edited
        hidden_states = torch.bmm(probs.reshape(batch * attn.heads, *probs.shape[2:]).to(value.dtype), value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_layers(unet: torch.nn.Module) -> dict[str, Layer]:
    """Processor name (``<module>.processor``, diffusers' key) -> ``Layer``, for every attention module."""
    from diffusers.models.attention_processor import Attention

    return {f"{name}.processor": Layer(name, bool(module.is_cross_attention), int(module.heads))
            for name, module in unet.named_modules() if isinstance(module, Attention)}


@contextmanager
def controlled(unet: torch.nn.Module, controllers: Sequence[AttentionController]) -> Iterator[None]:
    """Install controlled processors on ``unet`` for the block (nothing when there are no controllers)."""
    if not controllers:
        yield
        return
    saved = unet.attn_processors
    layers = attention_layers(unet)
    unet.set_attn_processor({name: ControlledAttnProcessor(layers[name], original, controllers)
                             if name in layers else original for name, original in saved.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


def unet_call_kwargs(cond_parts: Sequence[Sequence[Any]], n_rows: int, latent_size: tuple[int, int], step: int,
                     total_steps: int) -> tuple[UNetCall, dict[str, Any]]:
    """The ``UNetCall`` of a CFG step and the UNet keyword arguments that carry it to the processors."""
    rows = tuple((i, j) for i, parts in enumerate(cond_parts) for j in range(len(parts)))
    call = UNetCall(step, total_steps, rows, n_rows, (int(latent_size[0]), int(latent_size[1])))
    return call, {"cross_attention_kwargs": {"unet_call": call}}


def after_cfg(controllers: Sequence[AttentionController], call: UNetCall, prediction: torch.Tensor) -> torch.Tensor:
    for controller in controllers:
        prediction = controller.after_cfg(call, prediction)
    return prediction


# ---------------------------------------------------------------------------------------------------------------------
# Prompt tokens and words
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Word:
    """A word of the prompt and the key positions of its tokens."""

    text: str
    positions: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)   # the BPE pieces, for per-token maps

    @property
    def is_punctuation(self) -> bool:
        return not re.search(r"\w", self.text)


def main_prompt_text(prompt: str, steps: int) -> str:
    """The text whose tokens the maps are read for: tags removed, the first AND part, its last scheduled variant."""
    text = extra_networks.strip_tags(prompt)
    _, flat, _ = prompt_parser.get_multicond_prompt_list([text])
    first = flat[0] if flat else text
    schedule = prompt_parser.get_learned_conditioning_prompt_schedules([first], max(steps, 1))[0]
    return schedule[-1][1]


def prompt_words(model: Any, text: str, *, emphasis: str = "Original", embeddings: Any = None) -> list[Word]:
    """The words of an AND-free, schedule-free prompt text with their key positions, tokenized as the conditioning
    is (a textual-inversion embedding is one word named after it)."""
    tokenizer = conditioning.prompt_tokenizer(model)
    chunks, _ = conditioning.tokenize_prompt(tokenizer, text, emphasis=emphasis, embeddings=embeddings)
    words: list[Word] = []
    current: Word | None = None
    for c, chunk in enumerate(chunks):
        fixes = dict(chunk.fixes)
        j = 0
        while j < len(chunk.tokens):
            base = c * CHUNK_TOKENS + 1
            if j in fixes:
                emb = fixes[j]
                words.append(Word(emb.name, list(range(base + j, base + j + emb.length)), [emb.name] * emb.length))
                current, j = None, j + emb.length
                continue
            piece = tokenizer.convert_ids_to_tokens(chunk.tokens[j])
            if current is None:
                current = Word("")
                words.append(current)
            current.positions.append(base + j)
            current.tokens.append(piece.removesuffix("</w>"))
            current.text += piece.removesuffix("</w>")
            if piece.endswith("</w>"):
                current = None
            j += 1
    return [w for w in words if w.text]


# ---------------------------------------------------------------------------------------------------------------------
# Recording cross-attention maps
# ---------------------------------------------------------------------------------------------------------------------
LAYER_CHOICES = ("finest", "all", "coarsest")
"""Which cross-attention layers a map is read from, by the size of their attention grid."""


class CrossAttentionRecorder(AttentionController):
    """Sums, per image of the job, the cross-attention of its (first AND part's) positive row over heads, layers and
    the steps in ``[start, end)`` (fractions of the sampling), each layer's map resized to the latent size and kept
    apart per attention-grid size (``map(..., layers=)`` picks the finest, the coarsest or all of them).

    ``image`` counts over the whole job: set ``offset`` to the index of each batch's first image.
    """

    def __init__(self, start: float = 0.0, end: float = 1.0) -> None:
        self.start, self.end = start, end
        self.offset = 0
        self.sums: dict[int, dict[tuple[int, int], torch.Tensor]] = {}
        self.counts: dict[int, dict[tuple[int, int], int]] = {}

    def wants(self, layer: Layer) -> bool:
        return layer.is_cross

    def records(self, call: UNetCall) -> bool:
        first = math.floor(self.start * call.total_steps)
        last = max(first + 1, math.ceil(self.end * call.total_steps))
        return first <= call.step < last

    def wants_now(self, layer: Layer, call: UNetCall, queries: int) -> bool:
        return self.records(call)

    def edit(self, layer: Layer, call: UNetCall, probs: torch.Tensor) -> None:
        if not self.records(call):
            return None
        grid = call.spatial(probs.shape[2])
        images = sorted({image for image, _ in call.cond_rows})
        rows = [call.row(image) for image in images]
        maps = probs[rows].mean(1).float().transpose(1, 2).reshape(len(rows), probs.shape[3], *grid)
        maps = torch.nn.functional.interpolate(maps, size=call.latent_size, mode="bilinear", align_corners=False)
        for image, m in zip(images, maps):
            sums, counts = self.sums.setdefault(self.offset + image, {}), self.counts.setdefault(self.offset + image, {})
            if grid in sums:
                sums[grid], counts[grid] = _add_maps(sums[grid], m), counts[grid] + 1
            else:
                sums[grid], counts[grid] = m, 1
        return None

    def map(self, image: int, positions: Sequence[int], layers: str = "finest") -> torch.Tensor | None:
        """Mean map ``[h, w]`` (latent size) of the keys at ``positions`` for ``image``; None when nothing was
        recorded."""
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}; got {layers!r}")
        sums = self.sums.get(image)
        if not sums:
            return None
        grids = sorted(sums, key=lambda g: g[0] * g[1])
        chosen = {"finest": grids[-1:], "coarsest": grids[:1], "all": grids}[layers]
        size = tuple(sums[chosen[0]].shape[1:])
        total = sum(_resize(sums[g], size) for g in chosen) / sum(self.counts[image][g] for g in chosen)
        positions = [pos for pos in positions if pos < total.shape[0]]
        return total[positions].mean(0) if positions else None


def _add_maps(total: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``total + m`` where ``m`` may come from another latent size (hires pass) or key count (prompt editing)."""
    m = _resize(m, tuple(total.shape[1:]))
    keys = max(m.shape[0], total.shape[0])
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, keys - t.shape[0]))  # noqa: E731
    return pad(total) + pad(m)


def _resize(m: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(m.shape[1:]) == tuple(size):
        return m
    return torch.nn.functional.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]
