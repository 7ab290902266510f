"""Prompt -> CLIP embeddings on tiny random CLIP text models with the real tokenizer (a1111-compat.md §3f)."""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules import prompt_parser
from modules.conditioning import (
    CHUNK_LENGTH,
    Cond,
    Embedding,
    count_tokens,
    encode_prompts,
    encode_texts,
    stack_conds,
    tokenize_prompt,
)
from modules.paths import CONFIGS_DIR
from modules.textual_inversion import EmbeddingDatabase, read_embedding_file

TOKENIZER_DIR = CONFIGS_DIR / "sd15" / "tokenizer"
BOS, EOS, COMMA = 49406, 49407, 267


def _clip_config(hidden: int, **extra: int) -> CLIPTextConfig:
    return CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                          vocab_size=49408, max_position_embeddings=77, bos_token_id=BOS, eos_token_id=EOS,
                          pad_token_id=1, **extra)


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def open_clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")


@pytest.fixture(scope="module")
def text_encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(_clip_config(32)).eval()


@pytest.fixture(scope="module")
def text_encoder_2() -> CLIPTextModelWithProjection:
    torch.manual_seed(1)
    return CLIPTextModelWithProjection(_clip_config(48, projection_dim=40)).eval()


def _model(family: str, tokenizer=None, text_encoder=None, tokenizer_2=None, text_encoder_2=None) -> SimpleNamespace:
    return SimpleNamespace(family=family, tokenizer=tokenizer, text_encoder=text_encoder, tokenizer_2=tokenizer_2,
                           text_encoder_2=text_encoder_2, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def sd1(tokenizer, text_encoder) -> SimpleNamespace:
    return _model("sd1", tokenizer, text_encoder)


@pytest.fixture(scope="module")
def sdxl(tokenizer, text_encoder, open_clip_tokenizer, text_encoder_2) -> SimpleNamespace:
    return _model("sdxl", tokenizer, text_encoder, open_clip_tokenizer, text_encoder_2)


def _one(model: SimpleNamespace, text: str, **options) -> Cond:
    return encode_texts(model, [text], **options)[0]


def _same(a: Cond, b: Cond) -> bool:
    """Equal up to float noise (separate calls encode in differently sized batches)."""
    return torch.allclose(a.embeds, b.embeds, atol=1e-6)


def _ids(tokenizer: CLIPTokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _CapturedIds:
    """Records the input_ids an encoder is called with."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.calls: list[torch.Tensor] = []
        self.handle = encoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, _args, kwargs) -> None:
        self.calls.append(kwargs["input_ids"])

    def __enter__(self) -> _CapturedIds:
        return self

    def __exit__(self, *_exc) -> None:
        self.handle.remove()


# --------------------------------------------------------------------------------------------------------------------
# Chunking and the token counter


def test_short_prompt_is_one_chunk(tokenizer) -> None:
    chunks, count = tokenize_prompt(tokenizer, "a photo of an astronaut riding a horse")
    assert [chunk.tokens for chunk in chunks] == [[320, 1125, 539, 550, 18376, 6765, 320, 4558]]
    assert count == 8


def test_empty_prompt_still_gives_one_chunk(tokenizer) -> None:
    chunks, count = tokenize_prompt(tokenizer, "")
    assert len(chunks) == 1 and chunks[0].tokens == [] and count == 0


@pytest.mark.parametrize(("words", "sizes"), [(75, [75]), (76, [75, 1]), (150, [75, 75]), (200, [75, 75, 50])])
def test_long_prompts_split_into_chunks_of_75(tokenizer, words: int, sizes: list[int]) -> None:
    chunks, count = tokenize_prompt(tokenizer, "a " * words)
    assert [len(chunk.tokens) for chunk in chunks] == sizes
    assert count == words


def test_break_closes_the_chunk_and_counts_its_rest(tokenizer) -> None:
    chunks, count = tokenize_prompt(tokenizer, "a cat BREAK a dog")
    assert [chunk.tokens for chunk in chunks] == [_ids(tokenizer, "a cat"), _ids(tokenizer, "a dog")]
    assert count == CHUNK_LENGTH + 2
    assert len(tokenize_prompt(tokenizer, "BREAK a")[0]) == 2  # a leading BREAK leaves an empty chunk
    assert len(tokenize_prompt(tokenizer, "a BREAK")[0]) == 1  # a trailing one adds nothing
    assert len(tokenize_prompt(tokenizer, "(a BREAK b)")[0]) == 2


def test_overflow_moves_words_after_a_near_comma_to_the_next_chunk(tokenizer) -> None:
    chunks, count = tokenize_prompt(tokenizer, "a " * 60 + ", " + "b " * 20)
    assert [len(chunk.tokens) for chunk in chunks] == [61, 20]
    assert chunks[0].tokens[-1] == COMMA
    assert count == CHUNK_LENGTH + 20


def test_comma_more_than_20_tokens_back_is_ignored(tokenizer) -> None:
    chunks, _ = tokenize_prompt(tokenizer, "a " * 50 + ", " + "b " * 30)
    assert [len(chunk.tokens) for chunk in chunks] == [75, 6]


def test_multipliers_follow_the_segment_weights(tokenizer) -> None:
    chunk = tokenize_prompt(tokenizer, "a (cat:1.5) [dog]")[0][0]
    assert chunk.multipliers == pytest.approx([1.0, 1.5, 1 / 1.1])


def test_emphasis_none_encodes_brackets_literally(tokenizer) -> None:
    chunk = tokenize_prompt(tokenizer, "(cat:1.5) BREAK x", emphasis="None")[0]
    assert len(chunk) == 1
    assert chunk[0].tokens == _ids(tokenizer, "(cat:1.5) BREAK x")
    assert set(chunk[0].multipliers) == {1.0}


def test_unknown_emphasis_is_rejected(tokenizer) -> None:
    with pytest.raises(ValueError, match="No norm"):
        tokenize_prompt(tokenizer, "a", emphasis="Loud")


@pytest.mark.parametrize(("text", "options", "expected"), [
    ("", {}, (0, 75)),
    ("a " * 75, {}, (75, 75)),
    ("a " * 76, {}, (76, 150)),
    ("a BREAK b", {}, (76, 150)),
    ("[a:b c d:5]", {}, (3, 75)),  # the longest scheduled variant
    ("[a|b c]", {}, (2, 75)),
    ("a b c AND d", {}, (3, 75)),  # the longest AND-part
    ("a AND b", {"negative": True}, (3, 75)),  # negatives are not AND-split
    ("(a:1.5)", {"emphasis": "None"}, (7, 75)),
])
def test_count_tokens(tokenizer, sd1, text: str, options: dict, expected: tuple[int, int]) -> None:
    assert count_tokens(tokenizer, text, **options) == expected
    assert count_tokens(sd1, text, **options) == expected


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from([*"ab ,()[]:|\\", "BREAK", "1.5", "word ", ", ", "\n"]), max_size=150)
       .map("".join))
def test_chunks_never_overflow(tokenizer, text: str) -> None:
    chunks, count = tokenize_prompt(tokenizer, text)
    assert chunks and count >= 0
    for chunk in chunks:
        assert len(chunk.tokens) == len(chunk.multipliers) <= CHUNK_LENGTH
        assert torch.isfinite(torch.tensor(chunk.multipliers)).all()


# --------------------------------------------------------------------------------------------------------------------
# Encoding


def test_chunk_layout_sd1_pads_with_eos(sd1, tokenizer) -> None:
    with _CapturedIds(sd1.text_encoder) as captured:
        cond = _one(sd1, "a cat BREAK dog")
    ids = captured.calls[0]
    assert cond.embeds.shape == (154, 32) and cond.pooled is None
    cat_row = ids[1].tolist()  # row 0 is the empty prompt used for padding
    assert cat_row == [BOS, *_ids(tokenizer, "a cat"), EOS] + [EOS] * 73


def test_chunk_layout_sd2_pads_with_exclamation_mark(open_clip_tokenizer, text_encoder) -> None:
    sd2 = _model("sd2", open_clip_tokenizer, text_encoder)
    with _CapturedIds(text_encoder) as captured:
        _one(sd2, "a cat")
    assert captured.calls[0][1].tolist() == [BOS, 320, 2368, EOS] + [0] * 73


def test_long_prompt_concatenates_chunks(sd1) -> None:
    cond = _one(sd1, "a " * 100)
    assert cond.embeds.shape == (154, 32)
    first = _one(sd1, "a " * 75)
    assert torch.allclose(cond.embeds[:77], first.embeds)


def test_empty_prompt_is_one_chunk(sd1) -> None:
    cond = _one(sd1, "")
    assert cond.embeds.shape == (77, 32)
    assert torch.equal(cond.embeds, cond.empty_chunk)


def test_weights_scale_token_vectors_without_normalisation(sd1) -> None:
    plain = _one(sd1, "cat dog").embeds
    weighted = _one(sd1, "(cat:1.5) [dog]", emphasis="No norm").embeds
    assert torch.allclose(weighted[1], plain[1] * 1.5, atol=1e-6)  # position 0 is BOS
    assert torch.allclose(weighted[2], plain[2] / 1.1, atol=1e-6)
    assert torch.allclose(weighted[3:], plain[3:])


def test_original_emphasis_weights_tokens_and_restores_the_mean(sd1) -> None:
    plain = _one(sd1, "cat dog").embeds
    weighted = _one(sd1, "(cat:1.5) dog").embeds
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)
    scale = weighted[2, 0] / plain[2, 0]  # an unweighted token: only the mean correction
    assert not torch.allclose(weighted, plain)
    assert torch.allclose(weighted[1], plain[1] * 1.5 * scale, atol=1e-5)
    assert torch.allclose(weighted[2:], plain[2:] * scale, atol=1e-5)


def test_ignore_emphasis_drops_weights_but_not_syntax(sd1) -> None:
    assert torch.equal(_one(sd1, "(cat:1.5) dog", emphasis="Ignore").embeds, _one(sd1, "cat dog").embeds)
    assert not torch.allclose(_one(sd1, "(cat:1.5) dog", emphasis="None").embeds, _one(sd1, "cat dog").embeds)


def test_absurd_weights_stay_finite(sd1) -> None:
    for text in ("(a:" + "9" * 400 + ")", "(a:0)", "(a:-100) (b:100)", "(" * 500 + "a"):
        assert torch.isfinite(_one(sd1, text).embeds).all()


def test_clip_skip_uses_earlier_layer_and_final_norm(sd1, text_encoder) -> None:
    skip1, skip2 = _one(sd1, "a cat").embeds, _one(sd1, "a cat", clip_skip=2).embeds
    assert not torch.allclose(skip1, skip2)
    ids = torch.tensor([[BOS, 320, 2368, EOS] + [EOS] * 73])
    with torch.no_grad():
        out = text_encoder(input_ids=ids, output_hidden_states=True)
        expected = text_encoder.final_layer_norm(out.hidden_states[-2])[0]
    assert torch.allclose(skip2, expected, atol=1e-6)
    assert torch.allclose(skip1, out.last_hidden_state[0], atol=1e-6)
    assert torch.isfinite(_one(sd1, "a cat", clip_skip=99).embeds).all()  # clamped to the embedding layer


def test_sd2_ignores_clip_skip(open_clip_tokenizer, text_encoder) -> None:
    sd2 = _model("sd2", open_clip_tokenizer, text_encoder)
    assert torch.equal(_one(sd2, "a cat").embeds, _one(sd2, "a cat", clip_skip=2).embeds)


def test_unknown_family_is_rejected(tokenizer, text_encoder) -> None:
    with pytest.raises(ValueError, match="sd1"):
        _one(_model("flux", tokenizer, text_encoder), "a")


def test_half_precision_encoders_keep_their_dtype(tokenizer, text_encoder) -> None:
    model = _model("sd1", tokenizer, copy.deepcopy(text_encoder).to(torch.bfloat16))
    cond = _one(model, "a (cat:1.3) [dog]")
    assert cond.embeds.dtype == torch.bfloat16 and torch.isfinite(cond.embeds.float()).all()


# --------------------------------------------------------------------------------------------------------------------
# SDXL


def test_sdxl_concatenates_penultimate_states_of_both_encoders(sdxl, text_encoder, text_encoder_2) -> None:
    cond = _one(sdxl, "a cat")
    assert cond.embeds.shape == (77, 32 + 48)
    assert cond.pooled.shape == (40,)
    with torch.no_grad():
        first = text_encoder(input_ids=torch.tensor([[BOS, 320, 2368] + [EOS] * 74]), output_hidden_states=True)
        second = text_encoder_2(input_ids=torch.tensor([[BOS, 320, 2368, EOS] + [0] * 73]), output_hidden_states=True)
    assert torch.allclose(cond.embeds[:, :32], first.hidden_states[-2][0], atol=1e-6)
    assert torch.allclose(cond.embeds[:, 32:], second.hidden_states[-2][0], atol=1e-6)
    assert torch.allclose(cond.pooled, second.text_embeds[0], atol=1e-6)


def test_sdxl_pooled_comes_from_the_first_chunk(sdxl) -> None:
    long = _one(sdxl, "a cat BREAK a dog")
    assert long.embeds.shape == (154, 80)
    assert torch.allclose(long.pooled, _one(sdxl, "a cat").pooled, atol=1e-6)


def test_sdxl_refiner_uses_only_the_second_encoder(open_clip_tokenizer, text_encoder_2) -> None:
    refiner = _model("sdxl-refiner", tokenizer_2=open_clip_tokenizer, text_encoder_2=text_encoder_2)
    cond = _one(refiner, "a cat")
    assert cond.embeds.shape == (77, 48) and cond.pooled.shape == (40,)
    assert count_tokens(refiner, "a cat") == (2, 75)


def test_sdxl_stack_conds_returns_pooled(sdxl) -> None:
    schedule = encode_prompts(sdxl, ["a cat", "a " * 100], 20)
    embeds, pooled = stack_conds([cond for parts in schedule.at_step(0) for cond, _ in parts])
    assert embeds.shape == (2, 154, 80) and pooled.shape == (2, 40)


# --------------------------------------------------------------------------------------------------------------------
# Schedules, alternation, AND, caching


def test_schedule_switches_after_its_step(sd1) -> None:
    schedule = encode_prompts(sd1, ["a [cat:dog:0.5]"], 10)
    cat, dog = encode_texts(sd1, ["a cat", "a dog"])
    for step in range(10):
        cond = schedule.at_step(step)[0][0][0]
        assert _same(cond, cat if step <= 5 else dog), step


def test_alternation_alternates_every_step(sd1) -> None:
    """Sampling steps count from 0 and entries end at 1, 2, ...: steps 0 and 1 both use the first option (A1111)."""
    schedule = encode_prompts(sd1, ["a [cat|dog]"], 6)
    cat, dog = encode_texts(sd1, ["a cat", "a dog"])
    picked = [schedule.at_step(step)[0][0][0] for step in range(6)]
    assert [_same(cond, cat) for cond in picked] == [True, True, False, True, False, True]
    assert [_same(cond, dog) for cond in picked] == [False, False, True, False, True, False]


def test_hires_schedule(sd1) -> None:
    schedule = encode_prompts(sd1, ["a [cat:dog:1.5]"], 10, hires_steps=4)
    cat, dog = encode_texts(sd1, ["a cat", "a dog"])
    assert _same(schedule.at_step(2)[0][0][0], cat)
    assert _same(schedule.at_step(3)[0][0][0], dog)


def test_and_yields_weighted_parts(sd1) -> None:
    schedule = encode_prompts(sd1, ["a cat AND a dog :0.5", "a cat"], 20)
    cat, dog = encode_texts(sd1, ["a cat", "a dog"])
    first, second = schedule.at_step(0)
    assert [weight for _, weight in first] == [1.0, 0.5]
    assert _same(first[0][0], cat) and _same(first[1][0], dog)
    assert second[0][0] is first[0][0]  # the same text is encoded once


def test_negative_prompts_are_not_and_split(sd1) -> None:
    schedule = encode_prompts(sd1, ["a cat AND a dog"], 20, negative=True)
    [[(cond, weight)]] = schedule.at_step(0)
    assert weight == 1.0
    assert _same(cond, _one(sd1, "a cat AND a dog"))


def test_negative_prompts_are_scheduled(sd1) -> None:
    schedule = encode_prompts(sd1, ["[cat:dog:2]"], 4, negative=True)
    assert not _same(schedule.at_step(0)[0][0][0], schedule.at_step(3)[0][0][0])


def test_each_distinct_text_is_encoded_once_in_one_batch(sd1) -> None:
    with _CapturedIds(sd1.text_encoder) as captured:
        schedule = encode_prompts(sd1, ["[cat|dog]", "[cat|dog]", "cat"], 20)
    assert len(captured.calls) == 1
    assert captured.calls[0].shape == (3, 77)  # "", "cat", "dog"
    conds = {id(cond) for step in range(20) for parts in schedule.at_step(step) for cond, _ in parts}
    assert len(conds) == 2


def test_stack_conds_pads_with_empty_prompt_chunks(sd1) -> None:
    short, long = encode_texts(sd1, ["a cat", "a " * 100])
    embeds, pooled = stack_conds([short, long])
    assert embeds.shape == (2, 154, 32) and pooled is None
    assert torch.equal(embeds[0, :77], short.embeds)
    assert torch.allclose(embeds[0, 77:], _one(sd1, "").embeds, atol=1e-6)
    assert torch.equal(embeds[1], long.embeds)


# --------------------------------------------------------------------------------------------------------------------
# Textual-inversion hook


class _Lookup:
    """Finds ``trigger`` (a token id sequence) anywhere in a segment."""

    def __init__(self, trigger: Sequence[int], embedding: Embedding) -> None:
        self.trigger, self.embedding = list(trigger), embedding

    def find(self, tokens: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        if list(tokens[offset:offset + len(self.trigger)]) == self.trigger:
            return self.embedding, len(self.trigger)
        return None


def test_embedding_vectors_replace_the_trigger(sd1, tokenizer, text_encoder) -> None:
    vectors = torch.randn(2, 32)
    lookup = _Lookup(_ids(tokenizer, "zzyzx"), Embedding("zzyzx", {"text_encoder": vectors}))
    chunks, count = tokenize_prompt(tokenizer, "a (zzyzx:1.2) cat", embeddings=lookup)
    assert count == 4 and chunks[0].multipliers == pytest.approx([1.0, 1.2, 1.2, 1.0])
    cond = _one(sd1, "a zzyzx cat", embeddings=lookup)

    # the same as a model whose vocabulary has two spare tokens holding the vectors
    patched = copy.deepcopy(text_encoder)
    with torch.no_grad():
        patched.embeddings.token_embedding.weight[[100, 101]] = vectors
        expected = patched(input_ids=torch.tensor([[BOS, 320, 100, 101, 2368, EOS] + [EOS] * 71])).last_hidden_state
    assert torch.allclose(cond.embeds, expected[0], atol=1e-5)
    assert _same(_one(sd1, "a cat"), _one(_model("sd1", tokenizer, patched), "a cat"))  # the hook is gone


def test_embeddings_never_straddle_chunks(tokenizer) -> None:
    lookup = _Lookup(_ids(tokenizer, "zzyzx"), Embedding("zzyzx", {"text_encoder": torch.zeros(3, 32)}))
    chunks, count = tokenize_prompt(tokenizer, "a " * 73 + "zzyzx", embeddings=lookup)
    assert [len(chunk.tokens) for chunk in chunks] == [73, 3]
    assert chunks[1].fixes == [(0, lookup.embedding)]
    assert count == 75 + 3


# --------------------------------------------------------------------------------------------------------------------
# A1111 compat wrappers in prompt_parser


def test_a1111_compat_functions(sd1, sdxl) -> None:
    schedules = prompt_parser.get_learned_conditioning(sd1, ["a [cat:dog:5]", "x"], 10)
    assert [entry.end_at_step for entry in schedules[0]] == [5, 10]
    assert prompt_parser.reconstruct_cond_batch(schedules, 0).shape == (2, 77, 32)

    multicond = prompt_parser.get_multicond_learned_conditioning(sd1, ["a AND b:0.3", "c " * 80], 10)
    conds_list, stacked = prompt_parser.reconstruct_multicond_batch(multicond, 0)
    assert conds_list == [[(0, 1.0), (1, 0.3)], [(2, 1.0)]]
    assert stacked.shape == (3, 154, 32)

    xl = prompt_parser.reconstruct_cond_batch(prompt_parser.get_learned_conditioning(sdxl, ["a"], 10), 0)
    assert xl["crossattn"].shape == (1, 77, 80) and xl["vector"].shape == (1, 40)


# --------------------------------------------------------------------------------------------------------------------
# Textual-inversion files (modules.textual_inversion)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


@pytest.fixture()
def embeddings_dir(tmp_path: Path) -> Path:
    torch.manual_seed(2)
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    torch.save({"string_to_param": {"*": torch.randn(2, 32)}, "string_to_token": {"*": 265}, "name": "a1111-style",
                "step": 500, "sd_checkpoint": "abcdef", "sd_checkpoint_name": "tiny"}, folder / "a1111-style.pt")
    save_file({"emb_params": torch.randn(3, 32)}, folder / "sub" / "kohya-style.safetensors")
    torch.save({"<concept>": torch.randn(32)}, folder / "learned_embeds.bin")
    save_file({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)}, folder / "xl-style.safetensors")
    torch.save({"string_to_param": {"*": torch.randn(1, 64)}}, folder / "too-wide.pt")
    torch.save({"payload": _RunsCodeWhenUnpickled(tmp_path / "pwned")}, folder / "evil.pt")
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_embedding_files_load_for_sd1(embeddings_dir: Path, sd1) -> None:
    database = EmbeddingDatabase()
    database.load_directory(embeddings_dir, sd1)
    assert set(database.word_embeddings) == {"a1111-style", "kohya-style", "learned_embeds", "xl-style"}
    assert set(database.skipped_embeddings) == {"too-wide"}
    assert not (embeddings_dir.parent / "pwned").exists()  # weights_only refused the pickle's code

    a1111 = database.word_embeddings["a1111-style"]
    assert a1111.vectors["text_encoder"].shape == (2, 32) and a1111.step == 500
    assert database.word_embeddings["learned_embeds"].vectors["text_encoder"].shape == (1, 32)
    listing = database.api_listing()
    assert listing["loaded"]["a1111-style"] == {"step": 500, "sd_checkpoint": "abcdef", "sd_checkpoint_name": "tiny",
                                                "shape": 32, "vectors": 2}
    assert listing["skipped"]["too-wide"]["shape"] == 64


def test_embedding_trigger_words_are_found_in_prompts(embeddings_dir: Path, sd1, tokenizer) -> None:
    database = EmbeddingDatabase()
    database.load_directory(embeddings_dir, sd1)
    assert count_tokens(sd1, "a kohya-style cat", embeddings=database) == (1 + 3 + 1, 75)
    chunks, _ = tokenize_prompt(tokenizer, "a kohya-style cat", embeddings=database)
    assert chunks[0].fixes == [(1, database.word_embeddings["kohya-style"])]
    plain, styled = encode_texts(sd1, ["a cat", "a kohya-style cat"], embeddings=database)
    assert styled.embeds.shape == plain.embeds.shape
    assert torch.isfinite(styled.embeds).all()


def test_sdxl_loads_only_embeddings_for_both_encoders(embeddings_dir: Path, sdxl) -> None:
    database = EmbeddingDatabase()
    database.load_directory(embeddings_dir, sdxl)
    assert set(database.word_embeddings) == {"xl-style"}
    assert database.api_listing()["loaded"]["xl-style"]["shape"] == 32 + 48
    cond = encode_texts(sdxl, ["a xl-style cat"], embeddings=database)[0]
    assert cond.embeds.shape == (77, 80) and cond.pooled.shape == (40,)


def test_unreadable_embedding_files_raise_on_direct_read(embeddings_dir: Path) -> None:
    with pytest.raises(Exception):
        read_embedding_file(embeddings_dir / "evil.pt")
    with pytest.raises(ValueError, match="unknown format"):
        save_file({"a": torch.zeros(1, 4), "b": torch.zeros(1, 4)}, embeddings_dir / "two.safetensors")
        read_embedding_file(embeddings_dir / "two.safetensors")
