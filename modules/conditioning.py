"""Prompt text -> CLIP embeddings with A1111's semantics (a1111-compat.md §3f), on transformers' CLIP text models.

A prompt is attention-parsed (``prompt_parser.parse_prompt_attention``), each segment tokenized without BOS/EOS, and
the tokens packed into chunks of 75 (``BREAK`` closes a chunk; a chunk that overflows moves the tokens after a comma
in its last 20 tokens to the next chunk; textual-inversion vectors never straddle two chunks). Every chunk becomes
``[BOS] + 75 + [EOS]`` padded with the tokenizer's pad token, is encoded on its own, its hidden states are scaled per
token by the segment weights (emphasis), and the chunks are concatenated: ``embeds [77·k, C]``.

Which hidden states, per ``model.family`` (A1111 defaults):

- ``sd1``: the last layer, or with ``clip_skip`` N > 1 the output of ``hidden_states[-N]`` and the final layer norm.
- ``sd2``: the last layer + final norm. The diffusers SD2 configs already drop the last layer, so this is A1111's
  "penultimate"; clip skip is ignored, as in A1111.
- ``sdxl`` / ``sdxl-refiner``: the penultimate hidden states without final norm of each encoder present, concatenated
  on the feature axis (768 + 1280), plus ``pooled`` = ``text_encoder_2``'s projection of the FIRST chunk (unweighted).
  Clip skip is ignored (A1111's ``sdxl_clip_l_skip`` is off by default).

Choices where A1111 depends on how prompts happen to be batched:

- Emphasis "Original" restores the mean per chunk of each prompt, so a prompt's conditioning does not depend on the
  other prompts (or schedule variants) encoded with it. A1111 takes the mean over the whole batch of i-th chunks; for
  a batch of one prompt the two agree.
- ``stack_conds`` pads shorter prompts with chunks of the empty prompt (A1111's "Pad prompt/negative prompt"
  setting); A1111's default instead runs cond and uncond of different lengths as separate UNet batches and pads
  AND-parts by repeating the last vector.
- SDXL's two tokenizers share the CLIP BPE vocabulary; chunks are built once with the first tokenizer and each encoder
  wraps them with its own BOS/EOS/pad ids.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from modules.prompt_parser import (
    BREAK_WEIGHT,
    ComposableScheduledPromptConditioning,
    MulticondLearnedConditioning,
    ScheduledPromptConditioning,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
)

CHUNK_LENGTH = 75
"""Prompt tokens per chunk; with BOS and EOS a chunk is 77 tokens, CLIP's context length."""
COMMA_BACKTRACK = 20
"""A1111's ``comma_padding_backtrack``: how far back a comma may be to move the rest of a full chunk to the next."""

Emphasis = Literal["Original", "No norm", "Ignore", "None"]
EMPHASIS_MODES: tuple[Emphasis, ...] = ("Original", "No norm", "Ignore", "None")
"""A1111's ``emphasis`` setting: "Original" weights tokens and restores the mean, "No norm" only weights,
"Ignore" parses brackets and BREAK but applies no weights, "None" takes the prompt literally (no parsing at all)."""


@dataclass(frozen=True, eq=False)
class Cond:
    """The conditioning of one prompt text."""

    embeds: torch.Tensor
    """``[77·k, C]``: k chunks of CLIP hidden states (C = 768 SD1, 1024 SD2, 2048 SDXL)."""
    pooled: torch.Tensor | None
    """SDXL: ``[1280]`` text_encoder_2's projected pooled output of the first chunk; else None."""
    empty_chunk: torch.Tensor
    """``[77, C]``: the empty prompt encoded the same way; ``stack_conds`` pads with it."""


@dataclass(frozen=True, eq=False)
class Embedding:
    """A textual-inversion embedding: vectors that replace its trigger word's tokens in the prompt."""

    name: str
    vectors: Mapping[str, torch.Tensor]
    """Per encoder attribute name (``"text_encoder"``, ``"text_encoder_2"``) a ``[n, C]`` tensor; same n for all."""
    step: int | None = None
    """Training metadata from A1111 files (shown by ``/sdapi/v1/embeddings``)."""
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def length(self) -> int:
        return next(iter(self.vectors.values())).shape[0]


class EmbeddingLookup(Protocol):
    """Finds textual-inversion embeddings in token ids (an ``EmbeddingDatabase`` in A1111 terms)."""

    def find(self, tokens: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        """The embedding whose trigger starts at ``tokens[offset]`` and how many tokens the trigger spans."""


class TextModel(Protocol):
    """What encoding needs from a model (``sd_models.SDModel`` has it; tests use a SimpleNamespace)."""

    tokenizer: Any
    text_encoder: torch.nn.Module | None
    tokenizer_2: Any
    text_encoder_2: torch.nn.Module | None
    family: str
    device: torch.device | str


def prompt_tokenizer(model: TextModel) -> Any:
    """The tokenizer that chunks prompts: the first encoder's (the SDXL refiner has only ``tokenizer_2``)."""
    return model.tokenizer if model.text_encoder is not None else model.tokenizer_2


# --------------------------------------------------------------------------------------------------------------------
# Text -> chunks of token ids

EMBEDDING_PLACEHOLDER = 0
"""Token id standing in for each textual-inversion vector until its embedding replaces it."""


@dataclass
class PromptChunk:
    """Up to 75 token ids (no BOS/EOS), a weight per token, and the embeddings placed at token offsets."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)

    def split_after(self, index: int) -> PromptChunk:
        """Remove and return everything after ``tokens[index]``."""
        cut = index + 1
        rest = PromptChunk(self.tokens[cut:], self.multipliers[cut:],
                           [(offset - cut, emb) for offset, emb in self.fixes if offset >= cut])
        self.tokens, self.multipliers = self.tokens[:cut], self.multipliers[:cut]
        self.fixes = [(offset, emb) for offset, emb in self.fixes if offset < cut]
        return rest


class _ChunkBuilder:
    """Packs weighted tokens into chunks and counts tokens the way A1111's "N/75" counter does."""

    def __init__(self, comma_token: int | None) -> None:
        self.comma_token = comma_token
        self.chunks: list[PromptChunk] = []
        self.current = PromptChunk()
        self.last_comma = -1  # index of the last comma in the current chunk
        self.token_count = 0  # a closed chunk counts 75, the last one its length

    def close_chunk(self, *, last: bool = False) -> None:
        self.token_count += len(self.current.tokens) if last else CHUNK_LENGTH
        self.chunks.append(self.current)
        self.current = PromptChunk()
        self.last_comma = -1

    def _make_room(self, *, adding_comma: bool) -> None:
        if len(self.current.tokens) < CHUNK_LENGTH:
            return
        if not adding_comma and self.last_comma >= 0 and CHUNK_LENGTH - self.last_comma <= COMMA_BACKTRACK:
            rest = self.current.split_after(self.last_comma)
            self.close_chunk()
            self.current = rest
        else:
            self.close_chunk()

    def add_token(self, token: int, weight: float) -> None:
        self._make_room(adding_comma=token == self.comma_token)
        if token == self.comma_token:
            self.last_comma = len(self.current.tokens)
        self.current.tokens.append(token)
        self.current.multipliers.append(weight)

    def add_embedding(self, embedding: Embedding, weight: float) -> None:
        if embedding.length > CHUNK_LENGTH:
            raise ValueError(f"embedding {embedding.name!r} has {embedding.length} vectors; at most 75 fit a chunk")
        self._make_room(adding_comma=False)
        if len(self.current.tokens) + embedding.length > CHUNK_LENGTH:
            self.close_chunk()
        self.current.fixes.append((len(self.current.tokens), embedding))
        self.current.tokens += [EMBEDDING_PLACEHOLDER] * embedding.length
        self.current.multipliers += [weight] * embedding.length

    def finish(self) -> tuple[list[PromptChunk], int]:
        if self.current.tokens or not self.chunks:
            self.close_chunk(last=True)
        return self.chunks, self.token_count


def tokenize_prompt(
    tokenizer: Any, text: str, *, emphasis: Emphasis = "Original", embeddings: EmbeddingLookup | None = None
) -> tuple[list[PromptChunk], int]:
    """``text`` (one scheduled, AND-free prompt) as chunks, and A1111's token count for it.

    The count is 75 per chunk closed early (by BREAK, a comma or overflow) plus the length of the last chunk. There
    is always at least one chunk.
    """
    _check_emphasis(emphasis)
    segments = [[text, 1.0]] if emphasis == "None" else parse_prompt_attention(text)
    words = [seg_text for seg_text, weight in segments if not _is_break(seg_text, weight)]
    token_ids = iter(tokenizer(words, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
                     if words else [])
    builder = _ChunkBuilder(tokenizer.convert_tokens_to_ids(",</w>"))
    for seg_text, weight in segments:
        if _is_break(seg_text, weight):
            builder.close_chunk()
            continue
        ids = next(token_ids)
        position = 0
        while position < len(ids):
            found = embeddings.find(ids, position) if embeddings is not None else None
            if found is None:
                builder.add_token(ids[position], weight)
                position += 1
            else:
                embedding, trigger_length = found
                builder.add_embedding(embedding, weight)
                position += max(1, trigger_length)
    return builder.finish()


def _is_break(text: str, weight: float) -> bool:
    return text == "BREAK" and weight == BREAK_WEIGHT


def _check_emphasis(emphasis: str) -> None:
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f"unknown emphasis {emphasis!r}; valid: {', '.join(EMPHASIS_MODES)}")


def count_tokens(
    model_or_tokenizer: Any, text: str, *, steps: int = 20, negative: bool = False, emphasis: Emphasis = "Original",
    embeddings: EmbeddingLookup | None = None,
) -> tuple[int, int]:
    """A1111's prompt token counter: ``(count, target)`` shown as "count/target" ("0/75", "76/150").

    ``count`` is that of the longest scheduled variant of any AND-part (negative prompts are not AND-split); BREAK
    counts as the rest of its chunk. ``target`` is the count rounded up to whole chunks of 75. Extra-network tags
    (``<lora:...>``) are not removed here.
    """
    tokenizer = prompt_tokenizer(model_or_tokenizer) if hasattr(model_or_tokenizer, "family") else model_or_tokenizer
    parts = [text] if negative else get_multicond_prompt_list([text])[1]
    variants = dict.fromkeys(variant for schedule in get_learned_conditioning_prompt_schedules(parts, steps)
                             for _, variant in schedule)
    count = max(tokenize_prompt(tokenizer, variant, emphasis=emphasis, embeddings=embeddings)[1]
                for variant in variants)
    return count, math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


# --------------------------------------------------------------------------------------------------------------------
# Chunks -> hidden states


@dataclass(frozen=True)
class _Branch:
    """One tokenizer + text encoder pair and which of its hidden states conditions the UNet."""

    key: str  # the model attribute holding the encoder; also the key of textual-inversion vectors
    tokenizer: Any
    encoder: torch.nn.Module
    skip: int  # 1: the last layer's output, 2: the penultimate one, ...
    final_norm: bool
    pooled: bool  # also return the projected pooled output (CLIPTextModelWithProjection)


def _branches(model: TextModel, clip_skip: int) -> list[_Branch]:
    if model.family == "sd1":
        return [_Branch("text_encoder", model.tokenizer, model.text_encoder, max(1, clip_skip), True, False)]
    if model.family == "sd2":
        return [_Branch("text_encoder", model.tokenizer, model.text_encoder, 1, True, False)]
    if model.family in ("sdxl", "sdxl-refiner"):
        branches = [_Branch("text_encoder_2", model.tokenizer_2, model.text_encoder_2, 2, False, True)]
        if model.text_encoder is not None:
            branches.insert(0, _Branch("text_encoder", model.tokenizer, model.text_encoder, 2, False, False))
        return branches
    raise ValueError(f"unknown model family {model.family!r}; valid: sd1, sd2, sdxl, sdxl-refiner")


@contextmanager
def _embedding_fixes(branch: _Branch, chunks: Sequence[PromptChunk]) -> Iterator[None]:
    """While active, the encoder's token embeddings at textual-inversion placeholders are the embeddings' vectors."""
    fixes = [(row, 1 + offset, embedding) for row, chunk in enumerate(chunks) for offset, embedding in chunk.fixes]
    if not fixes:
        yield
        return
    for _, _, embedding in fixes:
        if branch.key not in embedding.vectors:
            raise ValueError(f"embedding {embedding.name!r} has no vectors for {branch.key} of this model")

    def replace(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, start, embedding in fixes:
            vectors = embedding.vectors[branch.key]
            output[row, start:start + vectors.shape[0]] = vectors.to(output)
        return output

    handle = branch.encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def chunk_hidden_states(
    branch: _Branch, chunks: Sequence[PromptChunk], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[N, 77, C]`` hidden states of N chunks at the branch's clip skip, and ``[N, C2]`` pooled outputs for the
    pooled branch; no emphasis. Gradients flow when enabled (textual-inversion training uses this too)."""
    bos, eos, pad = branch.tokenizer.bos_token_id, branch.tokenizer.eos_token_id, branch.tokenizer.pad_token_id
    ids = torch.tensor([[bos, *c.tokens, eos] + [pad] * (CHUNK_LENGTH - len(c.tokens)) for c in chunks], device=device)
    use_last_layer = branch.skip == 1 and branch.final_norm
    with _embedding_fixes(branch, chunks):
        output = branch.encoder(input_ids=ids, output_hidden_states=not use_last_layer)
    if use_last_layer:
        z = output.last_hidden_state
    else:
        z = output.hidden_states[-min(branch.skip, len(output.hidden_states))]
        if branch.final_norm:
            z = getattr(branch.encoder, "text_model", branch.encoder).final_layer_norm(z)
    return z, output.text_embeds if branch.pooled else None


def _encode_chunks(
    branch: _Branch, chunks: Sequence[PromptChunk], emphasis: Emphasis, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[N, 77, C]`` weighted hidden states of N chunks, and ``[N, C2]`` pooled outputs for the pooled branch."""
    with torch.no_grad():
        z, pooled = chunk_hidden_states(branch, chunks, device)
    multipliers = [[1.0, *c.multipliers] + [1.0] * (CHUNK_LENGTH + 1 - len(c.tokens)) for c in chunks]
    return _apply_emphasis(z, torch.tensor(multipliers, device=z.device), emphasis), pooled


def _apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor, emphasis: Emphasis) -> torch.Tensor:
    """Scale each token's hidden state by its weight; "Original" then restores each chunk's mean."""
    if emphasis in ("Ignore", "None"):
        return z
    original = z.float()
    weighted = original * multipliers[..., None]
    if emphasis == "Original":
        ratio = original.mean(dim=(1, 2), keepdim=True) / weighted.mean(dim=(1, 2), keepdim=True)
        weighted = weighted * torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
    return weighted.to(z.dtype)


def encode_texts(
    model: TextModel, texts: Sequence[str], *, clip_skip: int = 1, emphasis: Emphasis = "Original",
    embeddings: EmbeddingLookup | None = None,
) -> list[Cond]:
    """One ``Cond`` per text (scheduled, AND-free prompt texts); identical texts share one encoding and object."""
    _check_emphasis(emphasis)
    if not texts:
        return []
    branches = _branches(model, clip_skip)
    distinct = list(dict.fromkeys(["", *texts]))  # "" for Cond.empty_chunk
    chunk_lists = [tokenize_prompt(prompt_tokenizer(model), text, emphasis=emphasis, embeddings=embeddings)[0]
                   for text in distinct]
    rows = [chunk for chunks in chunk_lists for chunk in chunks]
    encoded = [_encode_chunks(branch, rows, emphasis, model.device) for branch in branches]
    hidden = torch.cat([z for z, _ in encoded], dim=-1)
    pooled = next((p for _, p in encoded if p is not None), None)

    first_rows = [0]
    for chunks in chunk_lists:
        first_rows.append(first_rows[-1] + len(chunks))
    empty_chunk = hidden[0]
    conds = {
        text: Cond(hidden[start:end].reshape(-1, hidden.shape[-1]), None if pooled is None else pooled[start],
                   empty_chunk)
        for text, start, end in zip(distinct, first_rows, first_rows[1:])
    }
    return [conds[text] for text in texts]


def encode_prompts(
    model: TextModel, prompts: Sequence[str], steps: int, *, clip_skip: int = 1, emphasis: Emphasis = "Original",
    hires_steps: int | None = None, use_old_scheduling: bool = False, negative: bool = False,
    embeddings: EmbeddingLookup | None = None,
) -> MulticondLearnedConditioning[Cond]:
    """Encode one prompt per image into a schedule: ``.at_step(step)`` -> per image ``[(Cond, weight), ...]``.

    Positive prompts are split on AND (each part keeps its ``:weight``); with ``negative=True`` every prompt is one
    part of weight 1.0, AND being literal text, as in A1111. ``[from:to:when]`` and ``[a|b]`` are resolved for
    ``steps`` (or the hires pass, see ``get_learned_conditioning_prompt_schedules``). Each distinct scheduled text is
    encoded once per call, so identical prompts and repeated schedule variants share ``Cond`` objects.
    """
    if negative:
        flat = list(dict.fromkeys(prompts))
        index_of = {prompt: i for i, prompt in enumerate(flat)}
        parts_per_image = [[(index_of[prompt], 1.0)] for prompt in prompts]
    else:
        parts_per_image, flat, _ = get_multicond_prompt_list(prompts)
    schedules = get_learned_conditioning_prompt_schedules(flat, steps, hires_steps, use_old_scheduling)
    texts = list(dict.fromkeys(text for schedule in schedules for _, text in schedule))
    cond_of = dict(zip(texts, encode_texts(model, texts, clip_skip=clip_skip, emphasis=emphasis,
                                           embeddings=embeddings)))
    scheduled = [[ScheduledPromptConditioning(end, cond_of[text]) for end, text in schedule] for schedule in schedules]
    return MulticondLearnedConditioning([
        [ComposableScheduledPromptConditioning(scheduled[index], weight) for index, weight in parts]
        for parts in parts_per_image
    ])


def stack_conds(conds: Sequence[Cond]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(embeds [B, T, C], pooled [B, C2] | None)``; shorter conds are padded with empty-prompt chunks."""
    length = max(cond.embeds.shape[0] for cond in conds)

    def padded(cond: Cond) -> torch.Tensor:
        missing_chunks = (length - cond.embeds.shape[0]) // cond.empty_chunk.shape[0]
        return torch.cat([cond.embeds, cond.empty_chunk.repeat(missing_chunks, 1)])

    embeds = torch.stack([padded(cond) for cond in conds])
    pooled = None if conds[0].pooled is None else torch.stack([cond.pooled for cond in conds])
    return embeds, pooled
