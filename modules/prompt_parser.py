"""A1111's prompt grammar: attention weights, scheduling/alternation and AND (composable diffusion).

Three independent passes, in the order the generation path applies them:

1. ``get_multicond_prompt_list`` splits a positive prompt on ``AND``; each part may end in ``:weight``.
2. ``get_learned_conditioning_prompt_schedules`` resolves ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and
   ``[a|b|c]`` into a list of ``[end_at_step, text]`` per prompt. Emphasis brackets stay in the text.
3. ``parse_prompt_attention`` turns one scheduled text into ``[[text, weight], ...]`` segments (with ``BREAK``).

Nothing here raises on user text: a prompt whose schedule syntax does not parse is used verbatim, weights are
finite and clamped to ``±WEIGHT_LIMIT``. The names, signatures and return shapes are A1111's, since extensions import
them; ``get_learned_conditioning`` and friends are thin wrappers over ``modules.conditioning``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, Union

if TYPE_CHECKING:
    import torch

    from modules.conditioning import Cond

WEIGHT_LIMIT = 100.0
"""Attention and AND weights are clamped to [-WEIGHT_LIMIT, WEIGHT_LIMIT] (A1111 has no limit; it can reach inf)."""

MAX_NESTING = 64
"""Brackets open at once beyond this are not syntax: the scheduling pass leaves such a prompt verbatim (as if it did
not parse) and the attention pass treats the extra opening brackets as literal text."""

BREAK_WEIGHT = -1
"""Weight of the ``["BREAK", -1]`` marker segment that forces a new 75-token chunk."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


def clamp_weight(value: float) -> float:
    """``value`` limited to ±WEIGHT_LIMIT (inf included); NaN becomes 1.0."""
    if math.isnan(value):
        return 1.0
    return max(-WEIGHT_LIMIT, min(WEIGHT_LIMIT, value))


# --------------------------------------------------------------------------------------------------------------------
# Attention pass

_ATTENTION_TOKEN = re.compile(
    r"""
      \\(?P<escaped>[()\[\]\\])                  # \( \) \[ \] \\ : the literal character
    | \\                                          # any other backslash is dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*(?P<wclose>\))  # ":1.5)" closes a round bracket with that weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass
class _Segment:
    text: str
    weight: float
    is_break: bool = False


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_prompt_attention(text: str) -> list[list[Any]]:
    """Split ``text`` into ``[[text, weight], ...]`` by A1111's emphasis syntax.

    ``(a)`` ×1.1, ``((a))`` ×1.21, ``(a:1.5)`` ×1.5, ``[a]`` ÷1.1. A backslash makes the next ``( ) [ ] \\``
    literal; any other backslash is dropped. An unclosed bracket weights the rest of the prompt, an unmatched
    closing one is literal. ``BREAK`` becomes its own ``["BREAK", -1]`` segment. Adjacent segments of equal weight
    are merged and empty ones dropped; an empty result is ``[["", 1.0]]``.

    Deliberate differences from A1111, all where A1111 misbehaves: a BREAK inside brackets still breaks (A1111
    multiplies its marker weight and then encodes the word "BREAK"), a malformed number such as ``(a:1.2.3)`` is
    literal text (A1111 raises ``ValueError``), weights are clamped with ``clamp_weight``, and an opening bracket
    beyond ``MAX_NESTING`` open ones of its kind is literal text (A1111's time grows with its square).
    """
    segments: list[_Segment] = []
    round_opens: list[int] = []
    square_opens: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for segment in segments[start:]:
            if not segment.is_break:
                segment.weight = clamp_weight(segment.weight * multiplier)

    def add_text(piece: str) -> None:
        for i, part in enumerate(_BREAK.split(piece)):
            if i > 0:
                segments.append(_Segment("BREAK", BREAK_WEIGHT, is_break=True))
            segments.append(_Segment(part, 1.0))

    for match in _ATTENTION_TOKEN.finditer(text):
        if match["escaped"] is not None:
            segments.append(_Segment(match["escaped"], 1.0))
        elif match["open"] is not None:
            opens = round_opens if match["open"] == "(" else square_opens
            if len(opens) < MAX_NESTING:
                opens.append(len(segments))
            else:  # deeper nesting is literal text, which keeps the work linear in the prompt's length
                add_text(match["open"])
        elif match["weight"] is not None:
            weight = _float_or_none(match["weight"])
            if weight is None:  # ":1.2.3)": the text is literal, the bracket is an ordinary ")"
                add_text(text[match.start():match.start("wclose")])
                if round_opens:
                    multiply_from(round_opens.pop(), ROUND_MULTIPLIER)
                else:
                    add_text(")")
            elif round_opens:
                multiply_from(round_opens.pop(), clamp_weight(weight))
            else:
                add_text(match[0])
        elif match["close"] == ")" and round_opens:
            multiply_from(round_opens.pop(), ROUND_MULTIPLIER)
        elif match["close"] == "]" and square_opens:
            multiply_from(square_opens.pop(), SQUARE_MULTIPLIER)
        elif match["close"] is not None or match["text"] is not None:
            add_text(match[0])
        # else: a lone backslash, which adds nothing

    for start in round_opens:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_opens:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[_Segment] = []
    for segment in segments:
        if segment.is_break:
            merged.append(segment)
        elif segment.text:
            if merged and not merged[-1].is_break and merged[-1].weight == segment.weight:
                merged[-1].text += segment.text
            else:
                merged.append(segment)
    return [[s.text, s.weight] for s in merged] or [["", 1.0]]


# --------------------------------------------------------------------------------------------------------------------
# Scheduling pass: a recursive-descent parser for the grammar in a1111-compat.md §3b
#
#   start:      (prompt | literal run of [ ] ( ) :)*
#   prompt:     (emphasized | scheduled | alternate | plain)*
#   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"        kept verbatim
#   scheduled:  "[" [prompt ":"] prompt ":" WS? NUMBER WS? "]"
#   alternate:  "[" prompt ("|" prompt?)+ "]"
#   plain:      (any char but \ [ ] ( ) : |  or  \ followed by any char but a newline)+
#
# Inside a bracket construct only constructs and plain text are allowed, so each bracket either parses as a whole
# construct or (at the top level only) is a literal character; where both are possible the construct wins. A "|" or
# a dangling backslash that no construct absorbs makes the whole prompt unparsable. A1111 runs this grammar through
# lark's Earley parser; a differential fuzz agreed on every input except constructs directly followed by two or more
# unmatched top-level brackets or colons ("x [a:b:5]))"), which lark's ambiguity resolution leaves literal.


@dataclass(frozen=True)
class _Scheduled:
    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str  # the NUMBER as written: a "." makes it a fraction of the steps


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = Union[str, _Scheduled, _Alternate]

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_NUMBER_THEN_CLOSE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")
_NESTING_SCAN = re.compile(r"\\.|[(\[]|[)\]]", re.DOTALL)


def _max_nesting(text: str) -> int:
    depth = deepest = 0
    for match in _NESTING_SCAN.finditer(text):
        token = match[0]
        if token in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif token in ")]":
            depth = max(0, depth - 1)
    return deepest


class _ScheduleParser:
    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> tuple[_Node, ...] | None:
        """The prompt's node sequence, or None where the grammar rejects it."""
        text, nodes, pos = self.text, [], 0
        if _max_nesting(text) > MAX_NESTING:
            return None
        while pos < len(text):
            prompt, pos = self._prompt(pos)
            nodes.extend(prompt)
            if pos < len(text):
                if text[pos] not in "[]():":
                    return None
                nodes.append(text[pos])
                pos += 1
        return tuple(nodes)

    def _prompt(self, pos: int) -> tuple[list[_Node], int]:
        """The longest run of plain text and whole constructs from ``pos``."""
        nodes: list[_Node] = []
        while pos < len(self.text):
            plain = _PLAIN.match(self.text, pos)
            if plain:
                nodes.append(plain[0])
                pos = plain.end()
                continue
            char = self.text[pos]
            construct = self._round(pos) if char == "(" else self._square(pos) if char == "[" else None
            if construct is None:
                break
            parsed, pos = construct
            nodes.extend(parsed)
        return nodes, pos

    def _char_at(self, pos: int) -> str:
        return self.text[pos] if pos < len(self.text) else ""

    def _round(self, pos: int) -> tuple[list[_Node], int] | None:
        first, pos = self._prompt(pos + 1)
        if self._char_at(pos) == ")":
            return ["(", *first, ")"], pos + 1
        if self._char_at(pos) == ":":
            second, pos = self._prompt(pos + 1)
            if self._char_at(pos) == ")":
                return ["(", *first, ":", *second, ")"], pos + 1
        return None

    def _square(self, pos: int) -> tuple[list[_Node], int] | None:
        first, pos = self._prompt(pos + 1)
        char = self._char_at(pos)
        if char == "]":
            return ["[", *first, "]"], pos + 1
        if char == "|":
            options = [tuple(first)]
            while self._char_at(pos) == "|":
                option, pos = self._prompt(pos + 1)
                options.append(tuple(option))
            if self._char_at(pos) == "]":
                return [_Alternate(tuple(options))], pos + 1
            return None
        if char == ":":
            number = _NUMBER_THEN_CLOSE.match(self.text, pos + 1)
            if number:  # [to:when]
                return [_Scheduled((), tuple(first), number[1])], number.end()
            second, pos = self._prompt(pos + 1)
            if self._char_at(pos) == ":":
                number = _NUMBER_THEN_CLOSE.match(self.text, pos + 1)
                if number:  # [from:to:when]
                    return [_Scheduled(tuple(first), tuple(second), number[1])], number.end()
        return None


@dataclass(frozen=True)
class _StepRule:
    """How a ``when`` NUMBER becomes a step, per a1111-compat.md §3b."""

    steps: int  # the pass being scheduled: base steps, or hires steps when hires_steps is given
    int_offset: int
    fraction_offset: float
    old_scheduling: bool

    @classmethod
    def create(cls, base_steps: int, hires_steps: int | None, use_old_scheduling: bool) -> _StepRule:
        base_steps = max(1, base_steps)
        if hires_steps is None or use_old_scheduling:
            return cls(base_steps, 0, 0.0, use_old_scheduling)
        return cls(max(1, hires_steps), base_steps, 1.0, False)

    def step(self, when: str) -> int:
        value = float(when)
        if self.old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.fraction_offset) * self.steps
        else:
            value = value - self.int_offset
        return int(max(-1.0, min(float(self.steps), value)))  # clamped first: float("1e999") is inf


def _boundaries(nodes: Sequence[_Node], rule: _StepRule) -> set[int]:
    found: set[int] = set()
    for node in nodes:
        if isinstance(node, _Scheduled):
            when = rule.step(node.when)
            if when >= 1:
                found.add(when)
            found |= _boundaries(node.before, rule) | _boundaries(node.after, rule)
        elif isinstance(node, _Alternate):
            found.update(range(1, rule.steps + 1))
            for option in node.options:
                found |= _boundaries(option, rule)
    return found


def _render(nodes: Sequence[_Node], step: int, rule: _StepRule) -> str:
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            parts.append(_render(node.before if step <= rule.step(node.when) else node.after, step, rule))
        else:
            parts.append(_render(node.options[(step - 1) % len(node.options)], step, rule))
    return "".join(parts)


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[list[Any]]]:
    """For each prompt, ``[[end_at_step, text], ...]``: ``text`` is used while ``step <= end_at_step``.

    ``when`` with a "." is a fraction of the steps, otherwise an absolute step. With ``hires_steps`` the schedule is
    for the hires pass: fractions count 1..2 over it and absolute steps continue after ``base_steps``.
    ``use_old_scheduling``: ``when < 1`` is a fraction, else a step (pre-1.6 A1111). ``[a|b]`` switches every step.
    The last entry always ends at the pass's step count; a prompt that does not parse is ``[[steps, prompt]]``.
    Step counts below 1 are treated as 1.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:0.5]"], 10)
    [[[5, 'a b'], [10, 'a c']]]
    """
    rule = _StepRule.create(base_steps, hires_steps, use_old_scheduling)

    def schedule(prompt: str) -> list[list[Any]]:
        nodes = _ScheduleParser(prompt).parse()
        if nodes is None:
            return [[rule.steps, prompt]]
        ends = sorted(_boundaries(nodes, rule) | {rule.steps})
        return [[end, _render(nodes, end, rule)] for end in ends]

    schedules = {prompt: schedule(prompt) for prompt in dict.fromkeys(prompts)}
    return [schedules[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------------------------------
# AND (composable diffusion)

_AND = re.compile(r"\bAND\b")


def count_and_parts(prompt: str) -> int:
    """How many sub-prompts ``AND`` splits ``prompt`` into (linear time; ``modules.limits`` bounds it)."""
    return sum(1 for _ in _AND.finditer(prompt)) + 1


_TRAILING_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*$")


def split_and_weight(subprompt: str) -> tuple[str, float]:
    """``"a cat :1.5"`` -> ``("a cat", 1.5)``; no trailing ``:number`` -> ``(text without trailing space, 1.0)``."""
    match = _TRAILING_WEIGHT.search(subprompt)
    if match is None:
        return subprompt.rstrip(), 1.0
    return subprompt[:match.start()], clamp_weight(float(match[1]))


def get_multicond_prompt_list(
    prompts: Sequence[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """Split each prompt on ``AND`` (A1111's return shape).

    Returns ``(indexes, flat, index_of)``: per prompt a list of ``(index into flat, weight)``, the distinct sub-prompt
    texts, and text -> index. A sub-prompt may end in ``:weight`` (default 1.0), also when there is no AND.
    """
    indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    index_of: dict[str, int] = {}
    for prompt in prompts:
        parts = []
        for subprompt in _AND.split(prompt):
            text, weight = split_and_weight(subprompt)
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            parts.append((index_of[text], weight))
        indexes.append(parts)
    return indexes, flat, index_of


# --------------------------------------------------------------------------------------------------------------------
# A1111's conditioning containers and compat functions (the encoding itself lives in modules.conditioning)

CondT = TypeVar("CondT")


class ScheduledPromptConditioning(NamedTuple, Generic[CondT]):
    end_at_step: int
    cond: CondT


def cond_at_step(schedule: Sequence[ScheduledPromptConditioning[CondT]], step: int) -> CondT:
    """The cond of the first entry with ``step <= end_at_step`` (``step`` counts sampling steps from 0).

    Past the last entry the last cond is used (A1111 falls back to the first one).
    """
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.cond
    return schedule[-1].cond


@dataclass
class ComposableScheduledPromptConditioning(Generic[CondT]):
    """One AND-part of one image: its schedule and its weight."""

    schedules: list[ScheduledPromptConditioning[CondT]]
    weight: float = 1.0


@dataclass
class MulticondLearnedConditioning(Generic[CondT]):
    """Per image, its AND-parts. This is the schedule object ``modules.conditioning.encode_prompts`` returns."""

    batch: list[list[ComposableScheduledPromptConditioning[CondT]]]

    @property
    def shape(self) -> tuple[int]:
        return (len(self.batch),)

    def at_step(self, step: int) -> list[list[tuple[CondT, float]]]:
        """Per image, ``(cond, weight)`` for each AND-part at sampling step ``step``.

        ``step`` counts from 0 like A1111's ``CFGDenoiser.step``: with 10 steps, ``[a:b:0.5]`` gives ``a`` for steps
        0..5 and ``b`` for 6..9, and ``[a|b]`` gives a, a, b, a, b, ...
        """
        return [[(cond_at_step(part.schedules, step), part.weight) for part in parts] for parts in self.batch]


def get_learned_conditioning(
    model: Any, prompts: Sequence[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False,
    **encode_options: Any,
) -> list[list[ScheduledPromptConditioning[Cond]]]:
    """A1111 compat: per prompt, its schedule of ``Cond``s; no AND (used for negative prompts).

    ``encode_options`` (``clip_skip``, ``emphasis``, ``embeddings``) go to ``modules.conditioning.encode_prompts``;
    A1111 reads them from its global settings.
    """
    from modules.conditioning import encode_prompts  # conditioning imports this module

    schedule = encode_prompts(model, prompts, steps, hires_steps=hires_steps, use_old_scheduling=use_old_scheduling,
                              negative=True, **encode_options)
    return [parts[0].schedules for parts in schedule.batch]


def get_multicond_learned_conditioning(
    model: Any, prompts: Sequence[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False,
    **encode_options: Any,
) -> MulticondLearnedConditioning[Cond]:
    """A1111 compat: ``modules.conditioning.encode_prompts`` (AND split, weights, schedules)."""
    from modules.conditioning import encode_prompts  # conditioning imports this module

    return encode_prompts(model, prompts, steps, hires_steps=hires_steps, use_old_scheduling=use_old_scheduling,
                          **encode_options)


def _stacked(conds: list[Cond]) -> torch.Tensor | dict[str, torch.Tensor]:
    from modules.conditioning import stack_conds  # conditioning imports this module

    embeds, pooled = stack_conds(conds)
    return embeds if pooled is None else {"crossattn": embeds, "vector": pooled}


def reconstruct_cond_batch(
    c: Sequence[Sequence[ScheduledPromptConditioning[Cond]]], current_step: int
) -> torch.Tensor | dict[str, torch.Tensor]:
    """A1111 compat: the conds at ``current_step`` stacked to ``[B, T, C]``; SDXL: ``{"crossattn", "vector"}``."""
    return _stacked([cond_at_step(schedule, current_step) for schedule in c])


def reconstruct_multicond_batch(
    c: MulticondLearnedConditioning[Cond], current_step: int
) -> tuple[list[list[tuple[int, float]]], torch.Tensor | dict[str, torch.Tensor]]:
    """A1111 compat: ``(conds_list, stacked)``; ``conds_list[i]`` holds ``(row in stacked, weight)`` per AND-part."""
    conds: list[Cond] = []
    conds_list: list[list[tuple[int, float]]] = []
    for parts in c.at_step(current_step):
        conds_list.append([(len(conds) + i, weight) for i, (_, weight) in enumerate(parts)])
        conds.extend(cond for cond, _ in parts)
    return conds_list, _stacked(conds)
