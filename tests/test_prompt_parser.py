"""A1111 prompt grammar: attention, scheduling/alternation, AND (a1111-compat.md §3)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.prompt_parser import (
    MAX_NESTING,
    WEIGHT_LIMIT,
    ComposableScheduledPromptConditioning,
    MulticondLearnedConditioning,
    ScheduledPromptConditioning,
    cond_at_step,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
)

W = 1 / 1.1  # one pair of square brackets

ATTENTION_CASES = [
    # plain text
    ("normal text", [["normal text", 1.0]]),
    ("", [["", 1.0]]),
    ("a:b, c", [["a:b, c", 1.0]]),
    # round brackets multiply by 1.1 and nest multiplicatively
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("((a))", [["a", 1.1 * 1.1]]),
    ("(((a)))", [["a", 1.1 * 1.1 * 1.1]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    # explicit weights
    ("(a:1.5)", [["a", 1.5]]),
    ("(a: 1.5 )", [["a", 1.5]]),
    ("(a:.5)", [["a", 0.5]]),
    ("(a:-1)", [["a", -1.0]]),
    ("(a:0)", [["a", 0.0]]),
    ("(a:+2)", [["a", 2.0]]),
    ("((a:1.5))", [["a", 1.5 * 1.1]]),
    ("x (y:1.0) z", [["x y z", 1.0]]),  # equal weights merge
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.3 * 1.1 * 1.1], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.1 ** 4], [".", 1.1]]),
    # square brackets divide by 1.1; a number there is text, not a weight
    ("[a]", [["a", W]]),
    ("[[a]]", [["a", W * W]]),
    ("[a:1.5]", [["a:1.5", W]]),
    ("([a])", [["a", 1.0]]),
    # unbalanced: an open bracket weights the rest, an unmatched close is literal
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("a (b", [["a ", 1.0], ["b", 1.1]]),
    ("[a", [["a", W]]),
    ("a) b", [["a) b", 1.0]]),
    ("a] b", [["a] b", 1.0]]),
    ("a:1.5) b", [["a:1.5) b", 1.0]]),
    ("()", [["", 1.0]]),
    ("(a]", [["a]", 1.1]]),
    # escapes
    (r"\(literal\]", [["(literal]", 1.0]]),
    (r"\[a\]", [["[a]", 1.0]]),
    ("a\\\\b", [["a\\b", 1.0]]),
    (r"(\(a\))", [["(a)", 1.1]]),
    (r"a\b", [["ab", 1.0]]),  # any other backslash is dropped
    ("a\\", [["a", 1.0]]),
    # BREAK
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a BREAK BREAK b", [["a", 1.0], ["BREAK", -1], ["BREAK", -1], ["b", 1.0]]),
    ("BREAK", [["BREAK", -1]]),
    ("a\nBREAK\nb", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("aBREAK b", [["aBREAK b", 1.0]]),
    ("BREAKfast", [["BREAKfast", 1.0]]),
    ("break", [["break", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1], ["b", 1.1]]),  # A1111 would encode the word BREAK here
    # malformed and absurd weights
    ("(a:1.2.3)", [["a:1.2.3", 1.1]]),
    ("(a:.)", [["a:.", 1.1]]),
    ("a:1.2.3)", [["a:1.2.3)", 1.0]]),
    ("(a:1e309)", [["a:1e309", 1.1]]),
    ("(a:nan)", [["a:nan", 1.1]]),
    ("(a:" + "9" * 400 + ")", [["a", WEIGHT_LIMIT]]),
    ("((a:100):100)", [["a", WEIGHT_LIMIT]]),
    ("((a:-100):100)", [["a", -WEIGHT_LIMIT]]),
    ("((a:0):" + "9" * 400 + ")", [["a", 0.0]]),
    # nesting deeper than MAX_NESTING: the extra opening brackets are text
    ("[" * MAX_NESTING + "a", [["a", W ** MAX_NESTING]]),
    ("[" * (MAX_NESTING + 1) + "a", [["[a", W ** MAX_NESTING]]),
    ("(" * (MAX_NESTING + 2) + "a", [["((a", WEIGHT_LIMIT]]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_CASES)
def test_parse_prompt_attention(text: str, expected: list) -> None:
    result = parse_prompt_attention(text)
    assert [segment[0] for segment in result] == [segment[0] for segment in expected]
    assert [segment[1] for segment in result] == pytest.approx([segment[1] for segment in expected])


def test_weights_are_products_in_closing_order() -> None:
    """Bit-identical with A1111, which multiplies as brackets close."""
    assert parse_prompt_attention("(((house:1.3)))")[0][1] == 1.5730000000000004


def test_break_marker_is_int_minus_one() -> None:
    assert parse_prompt_attention("a BREAK b")[1] == ["BREAK", -1]


def schedule(prompt: str, steps: int = 10, hires_steps: int | None = None, old: bool = False) -> list:
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]


ALTERNATING = [[step, "a" if step % 2 else "b"] for step in range(1, 11)]

SCHEDULE_CASES = [
    ("test", [[10, "test"]]),
    ("", [[10, ""]]),
    # [from:to:when]: a "." makes when a fraction of the steps, otherwise it is a step
    ("a [b:c:0.5]", [[5, "a b"], [10, "a c"]]),
    ("a [b:c:.25] d", [[2, "a b d"], [10, "a c d"]]),
    ("[b:c:3]", [[3, "b"], [10, "c"]]),
    ("[b:c:3.]", [[10, "b"]]),  # "3." is a fraction: 30 steps, clipped to 10
    ("[b:c:2.0]", [[10, "b"]]),
    ("[b:c:1e1]", [[10, "b"]]),  # no "." -> step 10
    ("[b:c:0]", [[10, "c"]]),  # boundaries below 1 are dropped
    ("[b:c:-3]", [[10, "c"]]),
    ("[b:c:15]", [[10, "b"]]),
    ("[b:c:1e999]", [[10, "b"]]),
    ("[b:c:-1e999]", [[10, "c"]]),
    ("[b:c: 5 ]", [[5, "b"], [10, "c"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    # [to:when] and [from::when]
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [b::3]", [[3, "a b"], [10, "a "]]),
    ("[:b:3]", [[3, ""], [10, "b"]]),
    ("[::3]", [[3, ""], [10, ""]]),
    # emphasis stays verbatim, also inside schedules
    ("(a:1.2)", [[10, "(a:1.2)"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("([a:b:5]:1.2)", [[5, "(a:1.2)"], [10, "(b:1.2)"]]),
    ("(([a:b:5]))", [[5, "((a))"], [10, "((b))"]]),
    # nesting
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("[a:[b:c:6]:3]", [[3, "a"], [6, "b"], [10, "c"]]),
    ("[[a:b:2]:c:4]", [[2, "a"], [4, "b"], [10, "c"]]),
    # alternation: step s uses option (s - 1) % n, empty options allowed
    ("[a|b]", ALTERNATING),
    ("[a|(b:1.1)]", [[s, "a" if s % 2 else "(b:1.1)"] for s in range(1, 11)]),
    ("[fe|]male", [[s, "female" if s % 2 else "male"] for s in range(1, 11)]),
    ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
    ("[a|[b:c:5]]", [[s, "a" if s % 2 else ("b" if s <= 5 else "c")] for s in range(1, 11)]),
    ("[a|b|c]", [[s, "abc"[(s - 1) % 3]] for s in range(1, 11)]),
    # brackets that form no construct are literal at the top level
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a:b]", [[10, "[a:b]"]]),
    ("[a:b:c:5]", [[10, "[a:b:c:5]"]]),
    ("[a:b:x]", [[10, "[a:b:x]"]]),
    ("x: y", [[10, "x: y"]]),
    ("[a:b:5] ]", [[5, "a ]"], [10, "b ]"]]),
    (r"\[a:b:5\]", [[10, r"\[a:b:5\]"]]),  # escapes are kept for the attention pass
    # prompts the grammar rejects are used verbatim, schedules included
    ("a | b", [[10, "a | b"]]),
    ("[a:b:5] x|y", [[10, "[a:b:5] x|y"]]),
    ("[a|b:5]", [[10, "[a|b:5]"]]),
    ("[a:b:5] x\\", [[10, "[a:b:5] x\\"]]),
    ("[a:b:5] x\\\n", [[10, "[a:b:5] x\\\n"]]),
    ("[" * (MAX_NESTING + 1) + "a:b:5" + "]" * (MAX_NESTING + 1),
     [[10, "[" * (MAX_NESTING + 1) + "a:b:5" + "]" * (MAX_NESTING + 1)]]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_CASES)
def test_prompt_schedules(prompt: str, expected: list) -> None:
    assert schedule(prompt) == expected


def test_deep_but_allowed_nesting_still_schedules() -> None:
    prompt = "(" * (MAX_NESTING - 1) + "[a:b:5]" + ")" * (MAX_NESTING - 1)
    assert [end for end, _ in schedule(prompt)] == [5, 10]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a [b:c:0.5]", [[10, "a c"]]),  # fractions count 1..2 over the hires pass: 0.5 is over
    ("a [b:c:1.5]", [[5, "a b"], [10, "a c"]]),
    ("a [b:c:1.0]", [[10, "a c"]]),
    ("a [b:c:2.0]", [[10, "a b"]]),
    ("a [b:c:15]", [[5, "a b"], [10, "a c"]]),  # steps continue after the 10 base steps
    ("a [b:c:5]", [[10, "a c"]]),
    ("[a|b]", ALTERNATING),
])
def test_hires_schedules(prompt: str, expected: list) -> None:
    assert schedule(prompt, 10, hires_steps=10) == expected


def test_hires_schedule_uses_hires_step_count() -> None:
    assert schedule("[b:c:1.5]", 20, hires_steps=4) == [[2, "b"], [4, "c"]]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("[b:c:0.5]", [[5, "b"], [10, "c"]]),  # below 1: a fraction
    ("[b:c:2.0]", [[2, "b"], [10, "c"]]),  # otherwise a step, with or without "."
    ("[b:c:3]", [[3, "b"], [10, "c"]]),
])
def test_old_scheduling(prompt: str, expected: list) -> None:
    assert schedule(prompt, old=True) == expected
    assert schedule(prompt, hires_steps=30, old=True) == expected  # hires_steps is ignored


def test_schedules_keep_prompt_order_and_duplicates() -> None:
    result = get_learned_conditioning_prompt_schedules(["[a:b:5]", "c", "[a:b:5]"], 10)
    assert result == [[[5, "a"], [10, "b"]], [[10, "c"]], [[5, "a"], [10, "b"]]]


def test_step_counts_below_one_are_one() -> None:
    assert schedule("[a:b:1]", 0) == [[1, "a"]]
    assert schedule("[a|b]", 0) == [[1, "a"]]


AND_CASES = [
    ("a", ["a"], [1.0]),
    ("a cat AND a dog", ["a cat", " a dog"], [1.0, 1.0]),
    ("a cat :1.5 AND a dog: 0.5", ["a cat", " a dog"], [1.5, 0.5]),
    ("a cat:1.2", ["a cat"], [1.2]),  # a weight without AND
    ("a cat:.5", ["a cat"], [0.5]),
    ("a cat:2.", ["a cat"], [2.0]),
    ("a cat:-1", ["a cat"], [-1.0]),
    ("a:1:2", ["a:1"], [2.0]),
    ("(a:1.2)", ["(a:1.2)"], [1.0]),
    ("[a:b:5]", ["[a:b:5]"], [1.0]),
    ("ANDROID AND_X", ["ANDROID AND_X"], [1.0]),
    ("a and b", ["a and b"], [1.0]),
    ("a AND", ["a", ""], [1.0, 1.0]),
    ("line one\nline two :2", ["line one\nline two"], [2.0]),
    ("a:" + "9" * 400, ["a"], [WEIGHT_LIMIT]),
]


@pytest.mark.parametrize(("prompt", "texts", "weights"), AND_CASES)
def test_and_split(prompt: str, texts: list[str], weights: list[float]) -> None:
    indexes, flat, index_of = get_multicond_prompt_list([prompt])
    assert [flat[i] for i, _ in indexes[0]] == texts
    assert [w for _, w in indexes[0]] == weights
    assert all(flat[i] == text for text, i in index_of.items())


def test_and_parts_are_deduplicated_across_prompts() -> None:
    indexes, flat, _ = get_multicond_prompt_list(["a AND b", "b AND a:0.5", "a"])
    assert flat == ["a", " b", "b", " a"]  # leading spaces are kept, as in A1111
    assert indexes == [[(0, 1.0), (1, 1.0)], [(2, 1.0), (3, 0.5)], [(0, 1.0)]]


def test_multicond_at_step_picks_each_parts_schedule() -> None:
    a = [ScheduledPromptConditioning(3, "a0"), ScheduledPromptConditioning(10, "a1")]
    b = [ScheduledPromptConditioning(10, "b")]
    multicond = MulticondLearnedConditioning([[ComposableScheduledPromptConditioning(a, 1.0),
                                               ComposableScheduledPromptConditioning(b, 0.5)],
                                              [ComposableScheduledPromptConditioning(b)]])
    assert multicond.shape == (2,)
    assert multicond.at_step(0) == [[("a0", 1.0), ("b", 0.5)], [("b", 1.0)]]
    assert multicond.at_step(3)[0][0] == ("a0", 1.0)
    assert multicond.at_step(4)[0][0] == ("a1", 1.0)
    assert cond_at_step(a, 99) == "a1"  # past the end: the last entry


# --------------------------------------------------------------------------------------------------------------------
# Properties: no text makes the parser raise, and weights stay finite

SYNTAX = st.sampled_from(["(", ")", "[", "]", ":", "|", "\\", " ", "\n", "BREAK", "AND", "a", "b", ",", "1", ".5",
                          "-2", "1e999", ":1.5)", "9" * 400, "[a:b:", "|]", "nan", ":"])
PROMPTS = st.one_of(st.lists(SYNTAX, max_size=40).map("".join), st.text(max_size=60))


def _check_segments(segments: list) -> None:
    assert segments
    for text, weight in segments:
        assert isinstance(text, str)
        assert math.isfinite(weight)
        assert abs(weight) <= WEIGHT_LIMIT


@settings(max_examples=400, deadline=None)
@given(PROMPTS, st.integers(min_value=-2, max_value=30), st.one_of(st.none(), st.integers(-2, 30)), st.booleans())
def test_any_text_parses_with_finite_weights(prompt: str, steps: int, hires_steps: int | None, old: bool) -> None:
    _check_segments(parse_prompt_attention(prompt))

    result = get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]
    ends = [end for end, _ in result]
    assert ends == sorted(set(ends))
    assert all(isinstance(end, int) and end >= 1 for end in ends)
    for _, text in result:
        _check_segments(parse_prompt_attention(text))

    indexes, flat, _ = get_multicond_prompt_list([prompt])
    assert all(math.isfinite(weight) and 0 <= i < len(flat) for i, weight in indexes[0])
