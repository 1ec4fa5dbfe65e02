"""What every driving reward shares: TRL's call signature and the per-call preparation (texts, memoised parses,
GRPO groups, ground truth).

Groups are formed from the calls TRL makes: completions are grouped by the text of their prompt (image parts count
by type only; pixels are not compared) plus the `sample_id` column when present, so two scenes with the same wording
but different ids never share a group. Without `prompts`, the whole call is one group. A group split across two calls
(TRL scores each process's slice separately) is treated as two independent groups, one per call.

Groups and parses are computed once per batch and shared by all the rewards of a TRL step, and parses are memoised
per text. A call reuses the last batch only when its completion texts, prompt keys and sample ids are equal to that
batch's, so the cache never changes a result (messages edited in place are new content).
"""

from __future__ import annotations

import functools
import marshal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..actions import (
    AXIS_VOCABULARY,
    EMPTY_ANSWER,
    AnswerWords,
    completion_to_text,
    normalize_word,
    parse_answer,
)

# Completions longer than this are parsed without memoising them (a cached key keeps the whole text alive).
_MAX_CACHED_TEXT = 4096
_PARSE_CACHE_SIZE = 1 << 14


Predictor = Callable[..., AnswerWords]


@functools.lru_cache(maxsize=64)
def _memoised(predict: Predictor) -> Predictor:
    """One bounded cache per predictor, shared by every reward that uses it: identical completions (common once a
    policy concentrates on a few answers) and rewards called with copies of a batch parse each text once."""
    return functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)(predict)


def _safe_predict(predict: Predictor, text: str, extra: tuple) -> AnswerWords:
    """`predict(text, *extra)` as `AnswerWords`, memoised for short texts with hashable extras; never raises."""
    try:
        if len(text) <= _MAX_CACHED_TEXT:
            try:
                result = _memoised(predict)(text, *extra)
            except TypeError:  # an unhashable extra column value: compute without the cache
                result = predict(text, *extra)
        else:
            result = predict(text, *extra)
        if isinstance(result, AnswerWords):
            return result
        speed, path = result
        return AnswerWords(frozenset(speed), frozenset(path))
    except Exception:  # a broken completion (or hook) is "no answer", never a crash
        return EMPTY_ANSWER


def _content_key(content: Any) -> Any:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                # Image/video parts count by type only: pixels are not compared (see `sample_id` in the module doc).
                parts.append(text if isinstance(text, str) else f"<{part.get('type', 'part')}>")
            else:
                parts.append(f"<{type(part).__name__}>")
        return tuple(parts)
    return repr(content)


def prompt_group_key(prompt: Any) -> Any:
    """A hashable key for the text content of a prompt (string or message list); equal prompts give equal keys.

    Example:
        >>> prompt_group_key([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Go."}]}])
        (('user', ('<image>', 'Go.')),)
    """
    try:
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, dict):
            prompt = [prompt]
        if isinstance(prompt, (list, tuple)):
            return tuple(
                (m.get("role"), _content_key(m.get("content"))) if isinstance(m, dict) else _content_key(m)
                for m in prompt
            )
        return repr(prompt)
    except Exception:  # exotic prompt objects still need some stable key
        return f"<unkeyable {type(prompt).__name__} {id(prompt)}>"


def _group_ids(prompts: Sequence[Any] | None, n: int, sample_ids: Sequence[Any] | None) -> list[int]:
    """Group index of each completion: completions with the same prompt (and `sample_id`) share one."""
    return _groups_of_keys(_prompt_keys(prompts, n), n, sample_ids)


def _prompt_keys(prompts: Sequence[Any] | None, n: int) -> tuple[Any, ...] | None:
    if prompts is None:
        return None
    if len(prompts) != n:
        raise ValueError(f"Got {len(prompts)} prompts for {n} completions; they must be aligned (one per completion).")
    return tuple(prompt_group_key(prompt) for prompt in prompts)


def _groups_of_keys(keys: tuple[Any, ...] | None, n: int, sample_ids: Sequence[Any] | None) -> list[int]:
    if keys is None:
        return [0] * n
    ids: dict[Any, int] = {}
    groups = []
    for i, key in enumerate(keys):
        if sample_ids is not None:
            sample_id = sample_ids[i]
            key = (key, sample_id if isinstance(sample_id, (str, int, float, type(None))) else repr(sample_id))
        groups.append(ids.setdefault(key, len(ids)))
    return groups


@functools.lru_cache(maxsize=4096)
def _words_from_label(label: str, axis: str) -> frozenset[str]:
    """Ground-truth words of one axis from a column value: `"KEEP"`, `"keep"`, or `"KEEP, STOP"` (several are fine)."""
    words = parse_answer(f"<answer>{label}</answer>").axis(axis)
    if not words:
        word = normalize_word(label)
        words = frozenset({word}) if word in AXIS_VOCABULARY[axis] else frozenset()
    return words


@functools.lru_cache(maxsize=4096)
def _words_from_solution(solution: str) -> AnswerWords:
    return parse_answer(solution)


def _ground_truth(axis: str, n: int, kwargs: Mapping[str, Any], reward_name: str) -> list[frozenset[str] | None]:
    """Ground-truth words of `axis` for each row: the `<axis>_action` column, else (per row) the `solution` column;
    `None` where a row has neither in a usable form."""
    column = f"{axis}_action"
    labels, solutions = kwargs.get(column), kwargs.get("solution")
    if labels is None and solutions is None:
        raise ValueError(
            f"Reward '{reward_name}' needs the ground truth: a `{column}` column or a `solution` column "
            f"(`<answer> SPEED, PATH </answer>`); the call had columns {sorted(kwargs)}."
        )
    for name, values in ((column, labels), ("solution", solutions)):
        if values is not None and len(values) != n:
            raise ValueError(f"Column `{name}` has {len(values)} values for {n} completions; they must be aligned.")
    truth: list[frozenset[str] | None] = []
    for i in range(n):
        words: frozenset[str] = frozenset()
        if labels is not None and isinstance(labels[i], str):
            words = _words_from_label(labels[i], axis)
        if not words and solutions is not None and isinstance(solutions[i], str):
            words = _words_from_solution(solutions[i]).axis(axis)
        truth.append(words or None)
    return truth


def _column_or_none(kwargs: Mapping[str, Any], column: str, n: int) -> list[Any]:
    """The values of `column`, one per completion, or `[None] * n` when the call has no such column (every row then
    lacks the value: the rewards score it like a missing cell)."""
    values = kwargs.get(column)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"Column `{column}` has {len(values)} values for {n} completions; they must be aligned.")
    return list(values)


class _Batch:
    """What the rewards of one TRL step need, computed once and shared: texts, group ids, predicted words.

    Identified by content, never by object identity, so a caller that edits its message objects in place and scores
    them again gets a new batch and the cache never changes a result. The content check is a byte comparison of the
    call's `marshal` serialisation (`fingerprint`; C speed, exact for the plain lists, dicts and strings TRL passes);
    for objects marshal cannot write (images inside multimodal prompts) it compares what the rewards read: the
    completion texts, the prompt keys and the sample ids.
    """

    def __init__(
        self,
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        sample_ids: Sequence[Any] | None,
        fingerprint: bytes | None = None,
    ):
        self.fingerprint = fingerprint
        self.texts = [completion_to_text(c) for c in completions]
        self.size = len(self.texts)
        self.prompt_keys = _prompt_keys(prompts, self.size)
        self.sample_ids = None if sample_ids is None else tuple(sample_ids)
        self._groups: list[int] | None = None
        self._predicted: dict[Predictor, list[AnswerWords]] = {}

    def same_content(self, other: _Batch) -> bool:
        return (
            self.texts == other.texts
            and self.prompt_keys == other.prompt_keys
            and _same_values(self.sample_ids, other.sample_ids)
        )

    @property
    def groups(self) -> list[int]:
        if self._groups is None:
            self._groups = _groups_of_keys(self.prompt_keys, self.size, self.sample_ids)
        return self._groups

    def predicted(
        self, predict: Predictor, predict_columns: Sequence[str], kwargs: Mapping[str, Any]
    ) -> list[AnswerWords]:
        memo_key = predict if not predict_columns and _is_hashable(predict) else None
        if memo_key is not None and memo_key in self._predicted:
            return self._predicted[memo_key]
        extras = []
        for column in predict_columns:
            values = kwargs.get(column)
            if values is None or len(values) != self.size:
                raise ValueError(f"The predictor needs a `{column}` column aligned with the {self.size} completions.")
            extras.append(values)
        if extras:
            rows = zip(*extras)
            return [_safe_predict(predict, t, tuple(row)) for t, row in zip(self.texts, rows)]
        predicted = [_safe_predict(predict, t, ()) for t in self.texts]
        if memo_key is not None:
            self._predicted[memo_key] = predicted
        return predicted


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _same_values(kept: tuple | None, given: tuple | None) -> bool:
    if kept is None or given is None:
        return kept is None and given is None
    try:
        return len(kept) == len(given) and all(a is b or bool(a == b) for a, b in zip(kept, given))
    except Exception:  # values that cannot be compared (arrays) are not the same batch
        return False


_last_batch: _Batch | None = None


def _fingerprint(prompts: Any, completions: Any, sample_ids: Any) -> bytes | None:
    """The call's content as bytes (`marshal` format 2: no back-references, so equal bytes mean equal content), or
    None when it holds objects marshal cannot write."""
    try:
        return marshal.dumps((prompts, completions, sample_ids), 2)
    except (ValueError, TypeError):
        return None


def _batch_for(prompts: Sequence[Any] | None, completions: Sequence[Any], kwargs: Mapping[str, Any]) -> _Batch:
    global _last_batch
    sample_ids = kwargs.get("sample_id")
    if sample_ids is not None and len(sample_ids) != len(completions):
        sample_ids = None
    fingerprint = _fingerprint(prompts, completions, sample_ids)
    last = _last_batch
    if last is not None and fingerprint is not None and last.fingerprint == fingerprint:
        return last
    batch = _Batch(prompts, completions, sample_ids, fingerprint)
    if last is not None and fingerprint is None and last.fingerprint is None and last.same_content(batch):
        return last
    _last_batch = batch
    return batch


def _clear_caches() -> None:
    """Forget memoised parses and the last batch (benchmarks use it to time cold calls)."""
    global _last_batch
    _last_batch = None
    _memoised.cache_clear()
    _words_from_label.cache_clear()
    _words_from_solution.cache_clear()
    normalize_word.cache_clear()


# The reward callables. Instances of small classes (not closures) so they pickle and carry their own `__name__`
# (TRL's `get_callable_name` unwraps `functools.partial` to the inner function's name, so partials would all log
# under one name).


class _DrivingReward:
    """Base of the driving rewards: TRL call signature, shared preparation, a `__name__` for TRL's logs."""

    def __init__(self, name: str, predict: Predictor = parse_answer, predict_columns: Sequence[str] = ()):
        if not callable(predict):
            raise ValueError(f"`predict` must be callable (text -> AnswerWords), got {predict!r}.")
        self.__name__ = name
        self.predict = predict
        self.predict_columns = tuple(predict_columns)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__name__}>"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None, **kwargs):
        if completions is None:
            raise ValueError(f"Reward '{self.__name__}' needs `completions`.")
        return self._score(_batch_for(prompts, completions, kwargs), kwargs)

    def _predicted(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[AnswerWords]:
        return batch.predicted(self.predict, self.predict_columns, kwargs)

    def _words(self, batch: _Batch, kwargs: Mapping[str, Any], axis: str) -> list[frozenset[str]]:
        return [p.speed if axis == "speed" else p.path for p in self._predicted(batch, kwargs)]

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        raise NotImplementedError
