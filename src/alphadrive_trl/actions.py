"""Meta-action vocabularies, answer parsing and formatting.

A plan is one SPEED word and one PATH word for the next 3 seconds. Models answer
`<think> reasoning </think> <answer> SPEED, PATH </answer>`. Two parsers serve two purposes:

- `parse_answer` is lenient (rewards): it keeps every vocabulary word it can find in the last answer block, so a
  hedging answer such as `KEEP, DECELERATE, STRAIGHT` is seen as two speed words and punished by F1.
- `parse_answer_strict` is for evaluation: exactly one valid word per axis inside a closed answer block, else `None`.

Neither ever raises, whatever the input.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, NamedTuple

SPEED_ACTIONS: tuple[str, ...] = ("KEEP", "ACCELERATE", "DECELERATE", "STOP")
PATH_ACTIONS: tuple[str, ...] = ("STRAIGHT", "RIGHT_CHANGE", "LEFT_CHANGE", "RIGHT_TURN", "LEFT_TURN")
AXES: tuple[str, ...] = ("speed", "path")
AXIS_VOCABULARY: dict[str, tuple[str, ...]] = {"speed": SPEED_ACTIONS, "path": PATH_ACTIONS}
ALL_PLANS: tuple[tuple[str, str], ...] = tuple(itertools.product(SPEED_ACTIONS, PATH_ACTIONS))
# The most dangerous planning error (the safety reward and the evaluation's safety-critical error rate): the expert
# slows down or stops, the answer keeps its speed or speeds up.
SAFETY_CRITICAL_SPEEDS = frozenset({"STOP", "DECELERATE"})
UNSAFE_SPEEDS = frozenset({"ACCELERATE", "KEEP"})

_SPEED_SET = frozenset(SPEED_ACTIONS)
_PATH_SET = frozenset(PATH_ACTIONS)

_ANSWER_TAG = re.compile(r"<(/?)answer>", re.IGNORECASE)
_OPEN_ANSWER = re.compile(r"<answer>", re.IGNORECASE)
# Pieces of an answer are separated by commas; semicolons, slashes, "|" and newlines are accepted too because models
# (and the published data) sometimes use them.
_PIECE_SEPARATORS = re.compile(r"[,;/|\n]+")
_NON_WORD = re.compile(r"[^A-Z_ ]+")
_SPACES = re.compile(r"[\s\-]+")


class AnswerWords(NamedTuple):
    """The valid vocabulary words found on each axis of an answer (possibly several, possibly none)."""

    speed: frozenset[str]
    path: frozenset[str]

    def axis(self, name: str) -> frozenset[str]:
        return self.speed if name == "speed" else self.path


EMPTY_ANSWER = AnswerWords(frozenset(), frozenset())


def completion_to_text(completion: Any) -> str:
    """Return the text of a completion in any of the forms TRL passes.

    Accepts a plain string, a conversational message list (`[{"role": "assistant", "content": ...}]`, the text of
    the last assistant turn), a single message dict, or multimodal content parts (`[{"type": "text", "text": ...}]`).
    Anything else becomes `""` (rewards must never raise).

    Example:
        >>> completion_to_text([{"role": "assistant", "content": "<answer> KEEP, STRAIGHT </answer>"}])
        '<answer> KEEP, STRAIGHT </answer>'
    """
    try:
        if isinstance(completion, str):
            return completion
        if isinstance(completion, dict):
            return _content_to_text(completion.get("content", completion.get("text", "")))
        if isinstance(completion, (list, tuple)):
            messages = [m for m in completion if isinstance(m, dict)]
            # Messages carry a role or a content (TRL's own reward examples use `[{"content": ...}]`, no role);
            # content parts carry a type/text instead.
            if messages and any("role" in m or "content" in m for m in messages):
                messages = [m for m in messages if "role" in m or "content" in m]
                assistant = [m for m in messages if m.get("role") == "assistant"] or messages
                return _content_to_text(assistant[-1].get("content", ""))
            return _content_to_text(list(completion))
    except Exception:  # malformed structures of any kind are "no text"
        return ""
    return ""


def _content_to_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def extract_answer_block(text: Any) -> str | None:
    """Return the content of the last closed `<answer>…</answer>` block, or `None` when there is none.

    Same result as the last match of `re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL | re.IGNORECASE)`, in
    linear time: that regex rescans to the end of the text for every opening tag that has no closing tag, which is
    quadratic on long malformed generations.
    """
    if not isinstance(text, str):
        return None
    block, start = None, None
    for tag in _ANSWER_TAG.finditer(text):
        if not tag.group(1):
            if start is None:  # an opening tag inside an open block is part of its content, as with `.*?`
                start = tag.end()
        elif start is not None:
            block, start = (start, tag.start()), None
    return text[block[0] : block[1]] if block else None


def _answer_region(text: str) -> str:
    block = extract_answer_block(text)
    if block is not None:
        return block
    # An unclosed answer tag (generation cut by max length) still says something: read what follows the last one.
    opens = list(_OPEN_ANSWER.finditer(text))
    if opens:
        return text[opens[-1].end() :]
    return text


# Answer pieces repeat endlessly (" KEEP", " STRAIGHT "), so normalised forms are memoised.
@functools.lru_cache(maxsize=8192)
def normalize_word(piece: str) -> str:
    """Upper-case a piece, turn spaces/hyphens into underscores and drop stray punctuation: ` right-change.` ->
    `RIGHT_CHANGE`."""
    cleaned = _NON_WORD.sub("", _SPACES.sub(" ", piece.upper())).strip()
    return cleaned.replace(" ", "_")


def _classify(region: str) -> tuple[set[str], set[str], int]:
    """Split a region into pieces and sort the valid words by axis; also count pieces that are not words."""
    speed: set[str] = set()
    path: set[str] = set()
    unknown = 0
    for piece in _PIECE_SEPARATORS.split(region):
        if not piece.strip():
            continue
        word = normalize_word(piece)
        if word in _SPEED_SET:
            speed.add(word)
        elif word in _PATH_SET:
            path.add(word)
        else:
            # "KEEP STRAIGHT" (no comma) or "speed: KEEP": look at the whitespace-separated tokens one by one.
            found = False
            for token in piece.split():
                token_word = normalize_word(token)
                if token_word in _SPEED_SET:
                    speed.add(token_word)
                    found = True
                elif token_word in _PATH_SET:
                    path.add(token_word)
                    found = True
            if not found:
                unknown += 1
    return speed, path, unknown


def parse_answer(text: Any) -> AnswerWords:
    """Lenient parse: every valid SPEED and PATH word in the last `<answer>` block (else in the whole text).

    Example:
        >>> parse_answer("<think> red light </think> <answer> stop, Straight. </answer>")
        AnswerWords(speed=frozenset({'STOP'}), path=frozenset({'STRAIGHT'}))
    """
    if not isinstance(text, str) or not text:
        return EMPTY_ANSWER
    try:
        speed, path, _ = _classify(_answer_region(text))
    except Exception:
        return EMPTY_ANSWER
    return AnswerWords(frozenset(speed), frozenset(path))


def parse_answer_strict(text: Any) -> tuple[str, str] | None:
    """Strict parse for evaluation: a closed `<answer>` block holding exactly one SPEED word and one PATH word (in
    either order) and nothing else. Returns `(speed, path)` or `None`.

    Example:
        >>> parse_answer_strict("<answer> DECELERATE, LEFT_TURN </answer>")
        ('DECELERATE', 'LEFT_TURN')
        >>> parse_answer_strict("<answer> KEEP, DECELERATE, STRAIGHT </answer>") is None
        True
    """
    block = extract_answer_block(text)
    if block is None:
        return None
    try:
        pieces = [p for p in _PIECE_SEPARATORS.split(block) if p.strip()]
        if len(pieces) != 2:
            return None
        words = [normalize_word(p) for p in pieces]
    except Exception:
        return None
    speed = [w for w in words if w in _SPEED_SET]
    path = [w for w in words if w in _PATH_SET]
    if len(speed) != 1 or len(path) != 1:
        return None
    return speed[0], path[0]


def plan_to_string(speed: str, path: str) -> str:
    """`("KEEP", "STRAIGHT")` -> `"KEEP, STRAIGHT"` (the form used in answers and in `feasible_actions`)."""
    return f"{speed}, {path}"


def parse_plan(plan: Any) -> tuple[str, str] | None:
    """Parse a `"SPEED, PATH"` string (as stored in `feasible_actions`) into a pair, or `None` when invalid."""
    if not isinstance(plan, str):
        return None
    return parse_answer_strict(f"<answer>{plan}</answer>")


def format_answer(speed: str, path: str, reasoning: str | None = None) -> str:
    """The canonical completion text.

    Example:
        >>> format_answer("STOP", "STRAIGHT", "The light ahead is red.")
        '<think> The light ahead is red. </think> <answer> STOP, STRAIGHT </answer>'
        >>> format_answer("KEEP", "STRAIGHT")
        '<answer> KEEP, STRAIGHT </answer>'
    """
    if speed not in _SPEED_SET:
        raise ValueError(f"Unknown SPEED action {speed!r}; expected one of {', '.join(SPEED_ACTIONS)}")
    if path not in _PATH_SET:
        raise ValueError(f"Unknown PATH action {path!r}; expected one of {', '.join(PATH_ACTIONS)}")
    answer = f"<answer> {plan_to_string(speed, path)} </answer>"
    if reasoning is None or not str(reasoning).strip():
        return answer
    return f"<think> {str(reasoning).strip()} </think> {answer}"
