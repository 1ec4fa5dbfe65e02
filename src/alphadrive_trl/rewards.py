"""The AlphaDrive rewards as TRL reward callables, and a registry to name them from a recipe.

Every callable follows TRL's contract, `fn(prompts=None, completions=..., **kwargs) -> list[float | None]`, so any
`trl.GRPOTrainer` uses it unchanged (TRL logs each as `rewards/<__name__>/mean`):

- completions are strings or conversational message lists (`[{"role": "assistant", "content": "..."}]`);
- ground truth comes from the `speed_action` / `path_action` columns, else from a `solution` column holding
  `<answer> SPEED, PATH </answer>` (the published AlphaDrive data); a row without usable ground truth scores `None`
  (TRL's "does not apply") on the rewards that need it;
- `prompts` (strings or message lists, images allowed) are used only to form GRPO groups for the diversity terms;
- every other keyword (`trainer_state`, `log_extra`, `completion_ids`, `images`, each dataset column) is accepted;
  `log_metric` (TRL >= 1.16) receives `planning/speed_f1`, `planning/path_f1` (mean F1 over rows with ground truth)
  and `planning/valid_answer` (share of answers with exactly one word per axis) from the planning rewards;
- no completion, however malformed, makes a reward raise.

Per axis (speed, path), with P the predicted words (`actions.parse_answer`, several allowed) and G the ground truth:

1. accuracy: F1(P, G) = 2|P ∩ G| / (|P| + |G|), 0 when P is empty. Exact: a perfect answer scores 1.0.
2. action weight: mean of the per-action weights over P (safety-critical actions weigh more), 0 when P is empty.
3. diversity, within the group of completions that share a prompt:
   - `paper`: factor `1 - min(cap, share)`, where `share` is the fraction of the *other* completions of the group whose
     answer holds the same word on this axis. With several predicted words, `share` is the mean over the words (each
     word is penalised for its own popularity; a hedging answer is not penalised twice). A group of one has share 0.
   - `release`: the published code's additive term: `+w` for a completion none of whose words was used by an earlier
     completion of its group (in call order), `-w` otherwise. Reproduced on purpose, quirks included: the first of
     several identical answers gets the bonus and the others the penalty (the result depends on the order), and an
     answer without any valid word gets `+w`. Unlike the published code, which counted over the whole call, the
     count is per group.

`speed_planning_reward` / `path_planning_reward` = accuracy × weight × diversity factor (paper mode);
`make_planning_reward` builds the other combinations (release mode, no weighting, no diversity, custom weights, or a
custom `predict` hook, e.g. meta-actions derived from a predicted trajectory).

Groups are formed from the calls TRL makes: completions are grouped by the text of their prompt (image parts count
by type only; pixels are not compared) plus the `sample_id` column when present, so two scenes with the same wording
but different ids never share a group. Without `prompts`, the whole call is one group. A group split across two calls
(TRL scores each process's slice separately) is treated as two independent groups, one per call.

Groups and parses are computed once per batch and shared by all the rewards of a TRL step, and parses are memoised
per text. A call reuses the last batch only when its completion texts, prompt keys and sample ids are equal to that
batch's, so the cache never changes a result (messages edited in place are new content).

Example:
    >>> from alphadrive_trl.rewards import get_reward_funcs
    >>> funcs = get_reward_funcs(["speed_planning", "path_planning", "format"])
    >>> [f.__name__ for f in funcs]
    ['speed_planning', 'path_planning', 'format']
    >>> funcs[0](prompts=["scene 1"], completions=["<think> red light </think> <answer> STOP, STRAIGHT </answer>"],
    ...          speed_action=["STOP"], path_action=["STRAIGHT"])
    [1.0]
"""

from __future__ import annotations

import difflib
import functools
import inspect
import marshal
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .actions import (
    AXES,
    AXIS_VOCABULARY,
    EMPTY_ANSWER,
    PATH_ACTIONS,
    SPEED_ACTIONS,
    AnswerWords,
    completion_to_text,
    normalize_word,
    parse_answer,
    parse_answer_strict,
)
from .labelling import LABELLER_MODES
from .trajectory import (
    DEFAULT_MAX_ACCEL,
    DEFAULT_MAX_SPEED,
    as_waypoints,
    derived_answer_words,
    is_plausible,
    is_trajectory_format,
    l2_errors,
    parse_trajectory,
)

__all__ = [
    "DEFAULT_ACTION_WEIGHTS",
    "DIVERSITY_MODES",
    "REWARD_REGISTRY",
    "ActionWeightReward",
    "AnswerFormatReward",
    "DiversityReward",
    "FormatReward",
    "PlanningReward",
    "SafetyPenalty",
    "action_weight_reward",
    "answer_format_reward",
    "diversity_reward",
    "format_reward",
    "format_reward_strict",
    "get_reward_funcs",
    "is_well_formatted",
    "make_planning_reward",
    "path_planning_reward",
    "planning_accuracy_reward",
    "prompt_group_key",
    "safety_penalty",
    "speed_planning_reward",
]

# Safety-critical decisions weigh more (AlphaDrive, "planning action weights").
DEFAULT_ACTION_WEIGHTS: dict[str, dict[str, float]] = {
    "speed": {"KEEP": 0.8, "ACCELERATE": 0.9, "DECELERATE": 1.0, "STOP": 1.0},
    "path": {"STRAIGHT": 0.8, "RIGHT_CHANGE": 1.0, "LEFT_CHANGE": 1.0, "RIGHT_TURN": 1.0, "LEFT_TURN": 1.0},
}
DIVERSITY_MODES: tuple[str, ...] = ("paper", "release", "none")
PLANNING_AXES: tuple[str, ...] = (*AXES, "both")

# Completions longer than this are parsed without memoising them (a cached key keeps the whole text alive).
_MAX_CACHED_TEXT = 4096
_PARSE_CACHE_SIZE = 1 << 14
_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"

Predictor = Callable[..., AnswerWords]


# --------------------------------------------------------------------------------------------------------------------
# Shared per-call preparation: texts, predictions (memoised), groups, ground truth.
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Per-axis terms (pure functions of predicted words, ground truth and groups).
# --------------------------------------------------------------------------------------------------------------------


def _f1(predicted: frozenset[str], truth: frozenset[str]) -> float:
    if not predicted:
        return 0.0
    return 2.0 * len(predicted & truth) / (len(predicted) + len(truth))


def _mean_weight(predicted: frozenset[str], weights: Mapping[str, float]) -> float:
    if len(predicted) == 1:
        for word in predicted:
            return weights[word]
    if not predicted:
        return 0.0
    # fsum: exact, so the value does not depend on the (hash-randomised) iteration order of the set.
    return math.fsum(weights[w] for w in predicted) / len(predicted)


def _paper_factors(words: list[frozenset[str]], groups: list[int], cap: float) -> list[float]:
    """`1 - min(cap, share)`: share = mean over the completion's words of the fraction of the *other* completions
    of its group that hold the same word. 1.0 for a completion without words or alone in its group."""
    sizes = Counter(groups)
    counts = Counter((g, word) for g, w in zip(groups, words) for word in w)
    factors = []
    for g, w in zip(groups, words):
        others = sizes[g] - 1
        if not w or others == 0:
            factors.append(1.0)
            continue
        if len(w) == 1:
            for word in w:
                share = (counts[g, word] - 1) / others
        else:
            share = math.fsum((counts[g, word] - 1) / others for word in w) / len(w)
        factors.append(1.0 - min(cap, share))
    return factors


def _release_terms(words: list[frozenset[str]], groups: list[int], weight: float) -> list[float]:
    """`+weight` when none of the completion's words was used by an earlier completion of its group, else `-weight`
    (the published AlphaDrive code, scoped to groups). No valid word: `+weight`, as there."""
    seen: dict[int, set[str]] = {}
    terms = []
    for g, w in zip(groups, words):
        used = seen.setdefault(g, set())
        terms.append(-weight if used & w else weight)
        used |= w
    return terms


def _resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The default weight table (both axes) updated with `weights`; unknown words or non-finite values raise."""
    table = {**DEFAULT_ACTION_WEIGHTS["speed"], **DEFAULT_ACTION_WEIGHTS["path"]}
    if not weights:
        return table
    if not isinstance(weights, Mapping):
        raise ValueError(f"Action weights must be a dict word -> weight, got {type(weights).__name__}: {weights!r}")
    for word, value in weights.items():
        key = normalize_word(str(word))
        if key not in table:
            raise ValueError(
                f"Unknown action {word!r} in the action weights; valid: {', '.join(SPEED_ACTIONS + PATH_ACTIONS)}."
            )
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Action weight of {word!r} must be a number, got {value!r}.") from err
        if not math.isfinite(number):
            raise ValueError(f"Action weight of {word!r} must be finite, got {value!r}.")
        table[key] = number
    return table


def _axes_of(axis: str) -> tuple[str, ...]:
    if axis not in PLANNING_AXES:
        raise ValueError(f"`axis` must be one of {', '.join(PLANNING_AXES)}, got {axis!r}.")
    return AXES if axis == "both" else (axis,)


def _check_diversity(mode: str, cap: Any, weight: Any) -> tuple[float, float]:
    """Validate the diversity settings; returns `(cap, weight)` as floats."""
    if mode not in DIVERSITY_MODES:
        raise ValueError(f"`diversity` must be one of {', '.join(DIVERSITY_MODES)}, got {mode!r}.")
    try:
        cap_value, weight_value = float(cap), float(weight)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`diversity_cap` and `diversity_weight` must be numbers, got {cap!r}, {weight!r}.") from err
    if not 0.0 <= cap_value <= 1.0:
        raise ValueError(f"`diversity_cap` must be a number in [0, 1], got {cap!r}.")
    if not math.isfinite(weight_value):
        raise ValueError(f"`diversity_weight` must be a finite number, got {weight!r}.")
    return cap_value, weight_value


def _mean_over_axes(per_axis: list[list[float]]) -> list[float]:
    if len(per_axis) == 1:
        return per_axis[0]
    return [sum(values) / len(values) for values in zip(*per_axis)]


# --------------------------------------------------------------------------------------------------------------------
# The reward callables. Instances of small classes (not closures) so they pickle and carry their own `__name__`
# (TRL's `get_callable_name` unwraps `functools.partial` to the inner function's name, so partials would all log
# under one name).
# --------------------------------------------------------------------------------------------------------------------


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


class PlanningReward(_DrivingReward):
    """Per-axis planning reward: F1 × action weight × paper diversity factor, or F1 × weight ± release term.

    Built by `make_planning_reward`; see the module docstring for the definitions. With `axis="both"` the value is
    the mean of the speed and path values.

    Args:
        axis: which meta-action axis is scored.
        weighting: multiply F1 by the mean action weight of the predicted words.
        diversity: `"paper"` (multiply by `1 - min(diversity_cap, share)`), `"release"` (add `±diversity_weight`
            like the published code, per group) or `"none"`.
        weights: per-action weights overriding `DEFAULT_ACTION_WEIGHTS` (words of either axis; missing ones keep
            their default).
        name: the callable's `__name__`, which TRL logs as `rewards/<name>/mean`. Default e.g.
            `speed_planning_reward`, `path_planning_release_reward`.
        predict: text -> `AnswerWords`, the predicted words (default `actions.parse_answer`). A trajectory-mode
            reward passes a predictor that derives the meta-actions from the predicted waypoints.
        predict_columns: dataset columns passed to `predict` after the text, row by row (e.g. `("ego_speed",)`).
        metric_prefix: prefix of the metrics sent to TRL's `log_metric` (`<prefix>/speed_f1`, `<prefix>/path_f1`,
            `<prefix>/valid_answer`).
    """

    def __init__(
        self,
        axis: str,
        *,
        weighting: bool = True,
        diversity: str = "paper",
        weights: Mapping[str, float] | None = None,
        diversity_cap: float = 0.2,
        diversity_weight: float = 0.4,
        name: str | None = None,
        predict: Predictor = parse_answer,
        predict_columns: Sequence[str] = (),
        metric_prefix: str = "planning",
    ):
        self.axes = _axes_of(axis)
        self.diversity_cap, self.diversity_weight = _check_diversity(diversity, diversity_cap, diversity_weight)
        self.axis = axis
        self.weighting = weighting
        self.diversity = diversity
        self.weights = _resolve_weights(weights)
        self.metric_prefix = metric_prefix
        super().__init__(name or _default_planning_name(axis, weighting, diversity), predict, predict_columns)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        per_axis, missing = [], [False] * batch.size
        for axis in self.axes:
            words = self._words(batch, kwargs, axis)
            truth = _ground_truth(axis, batch.size, kwargs, self.__name__)
            f1 = [_f1(p, t) if t is not None else 0.0 for p, t in zip(words, truth)]
            missing = [m or t is None for m, t in zip(missing, truth)]
            _log_f1(kwargs, f"{self.metric_prefix}/{axis}_f1", f1, truth)
            values = f1
            if self.weighting:
                values = [v * _mean_weight(p, self.weights) for v, p in zip(values, words)]
            if self.diversity == "paper":
                factors = _paper_factors(words, batch.groups, self.diversity_cap)
                values = [v * d for v, d in zip(values, factors)]
            elif self.diversity == "release":
                terms = _release_terms(words, batch.groups, self.diversity_weight)
                values = [v + d for v, d in zip(values, terms)]
            per_axis.append(values)
        _log_valid_share(kwargs, f"{self.metric_prefix}/valid_answer", self._predicted(batch, kwargs))
        return [None if m else v for v, m in zip(_mean_over_axes(per_axis), missing)]


def _default_planning_name(axis: str, weighting: bool, diversity: str) -> str:
    if weighting and diversity == "paper":
        return f"{axis}_planning_reward"
    return f"{axis}_planning{'' if weighting else '_unweighted'}_{diversity}_reward"


def _log_f1(kwargs: Mapping[str, Any], name: str, f1: list[float], truth: list[Any]) -> None:
    log_metric = kwargs.get("log_metric")
    scored = [v for v, t in zip(f1, truth) if t is not None]
    if callable(log_metric) and scored:
        log_metric(name, sum(scored) / len(scored))


def _log_valid_share(kwargs: Mapping[str, Any], name: str, predicted: list[AnswerWords]) -> None:
    """Share of completions whose answer holds exactly one word on each axis."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and predicted:
        valid = sum(len(p.speed) == 1 and len(p.path) == 1 for p in predicted)
        log_metric(name, valid / len(predicted))


def make_planning_reward(axis: str, **options: Any) -> PlanningReward:
    """Build a planning reward for one axis (`"speed"`, `"path"`, or `"both"` for their mean); `options` are the
    keyword arguments of `PlanningReward` (weighting, diversity, weights, name, predict, ...).

    Example:
        >>> reward = make_planning_reward("speed", diversity="release", name="speed_release")
        >>> reward(prompts=["p", "p"], completions=["<answer> STOP, STRAIGHT </answer>"] * 2, speed_action=["STOP"] * 2)
        [1.4, 0.6]
    """
    return PlanningReward(axis, **options)


class ActionWeightReward(_DrivingReward):
    """Mean over the two axes of the mean action weight of the predicted words (0 on an axis without a valid word).

    Needs no ground truth: it rewards committing to safety-critical decisions, so use it alongside an accuracy reward.

    Example:
        >>> action_weight_reward(completions=["<answer> STOP, STRAIGHT </answer>"])
        [0.9]
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *, name: str = "action_weight_reward", **kwargs):
        self.weights = _resolve_weights(weights)
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return _mean_over_axes(
            [[_mean_weight(p, self.weights) for p in self._words(batch, kwargs, axis)] for axis in AXES]
        )


# The dangerous planning error: the expert slows down or stops, the answer keeps its speed or speeds up.
SAFETY_CRITICAL_SPEEDS = frozenset({"STOP", "DECELERATE"})
UNSAFE_SPEEDS = frozenset({"ACCELERATE", "KEEP"})


class SafetyPenalty(_DrivingReward):
    """`-penalty` when the ground-truth speed is STOP or DECELERATE and the answer names ACCELERATE or KEEP, else 0.

    Why a penalty and not the action weights: all completions of a GRPO group share one ground truth, so a weight on
    the *correct* word scales every correct completion of that group alike, and the group normalisation of the
    advantages cancels it. A penalty on the unsafe *answer* separates it from the other wrong answers of its group.
    `None` (ignored by TRL) where the row has no speed ground truth.

    Example:
        >>> safety_penalty(completions=["<answer> KEEP, STRAIGHT </answer>", "<answer> STOP, STRAIGHT </answer>"],
        ...                speed_action=["STOP", "STOP"])
        [-1.0, 0.0]
    """

    def __init__(self, penalty: float = 1.0, *, name: str = "safety_penalty", **kwargs):
        if not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty < 0:
            raise ValueError(f"`safety_penalty` must be a finite number >= 0, got {penalty!r}.")
        self.penalty = float(penalty)
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        truth = _ground_truth("speed", batch.size, kwargs, self.__name__)
        words = self._words(batch, kwargs, "speed")
        return [
            None if t is None else (-self.penalty if t & SAFETY_CRITICAL_SPEEDS and p & UNSAFE_SPEEDS else 0.0)
            for p, t in zip(words, truth)
        ]


class DiversityReward(_DrivingReward):
    """The diversity term alone, mean over the two axes, within groups of completions sharing a prompt.

    `paper`: the factor `1 - min(cap, share)` for an axis with a valid word, 0 for an axis without one (as a
    standalone reward, emitting no valid word must not pay). `release`: the additive `±weight` term, unchanged
    (so an answer without any valid word gets `+weight`, as in the published code).

    Example:
        >>> diversity_reward(prompts=["p"] * 2, completions=["<answer> KEEP, STRAIGHT </answer>",
        ...                                                 "<answer> STOP, STRAIGHT </answer>"])
        [0.9, 0.9]
    """

    def __init__(
        self, mode: str = "paper", *, cap: float = 0.2, weight: float = 0.4, name: str = "diversity_reward", **kwargs
    ):
        if mode == "none":
            raise ValueError("The diversity reward needs `diversity` 'paper' or 'release', not 'none'.")
        self.cap, self.weight = _check_diversity(mode, cap, weight)
        self.mode = mode
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        per_axis = []
        for axis in AXES:
            words = self._words(batch, kwargs, axis)
            if self.mode == "paper":
                factors = _paper_factors(words, batch.groups, self.cap)
                per_axis.append([f if w else 0.0 for f, w in zip(factors, words)])
            else:
                per_axis.append(_release_terms(words, batch.groups, self.weight))
        return _mean_over_axes(per_axis)


def is_well_formatted(text: Any, *, trajectory_mode: bool = False) -> bool:
    """True when `text` (surrounding whitespace aside) is exactly `<think>…</think>` then `<answer>…</answer>`, each
    tag once, only whitespace between the blocks: the check of `format_reward`, which evaluation's `format_rate`
    shares. With `trajectory_mode`, `trajectory.is_trajectory_format` (the same plus one `<trajectory>` block). Never
    raises."""
    if trajectory_mode:
        return is_trajectory_format(text)
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    if not (stripped.startswith(_THINK_OPEN) and stripped.endswith(_ANSWER_CLOSE)):
        return False
    if any(stripped.count(tag) != 1 for tag in (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)):
        return False
    think_end, answer_start = stripped.find(_THINK_CLOSE), stripped.find(_ANSWER_OPEN)
    return think_end < answer_start and not stripped[think_end + len(_THINK_CLOSE) : answer_start].strip()


class FormatReward(_DrivingReward):
    """1.0 when the completion is `<think>…</think> <answer>…</answer>` and nothing else, else 0.0. With
    `strict=True` the answer must also hold exactly one SPEED and one PATH word (`actions.parse_answer_strict`).

    Example:
        >>> format_reward(completions=["<think> clear road </think>\\n<answer> KEEP, STRAIGHT </answer>",
        ...                            "<answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0]
        >>> format_reward_strict(completions=["<think> ? </think> <answer> KEEP, STOP, STRAIGHT </answer>"])
        [0.0]
    """

    def __init__(self, strict: bool = False, *, name: str | None = None):
        self.strict = strict
        super().__init__(name or ("format_reward_strict" if strict else "format_reward"))

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        rewards = []
        for text in batch.texts:
            ok = is_well_formatted(text) and (not self.strict or parse_answer_strict(text) is not None)
            rewards.append(1.0 if ok else 0.0)
        return rewards


class AnswerFormatReward(_DrivingReward):
    """1.0 when the whole completion is one `<answer> SPEED, PATH </answer>` block naming exactly one word per axis,
    else 0.0: the format reward of `answer_only` completions, which have no `<think>` block.

    Why it exists: planning F1 gives partial credit to an answer that names several words on an axis, and without a
    KL term (TRL's default `beta: 0.0`) GRPO learns to hedge ("KEEP, LEFT_CHANGE STRAIGHT"): measured on the demo,
    greedy planning accuracy fell from 63.8 to 38.8 % and from 61.0 to 0 % (docs/grpo.md). Add it to the planning
    rewards whenever `beta` is 0.

    Example:
        >>> answer_format_reward(completions=["<answer> KEEP, STRAIGHT </answer>",
        ...                                   "<answer> KEEP, LEFT_CHANGE STRAIGHT </answer>",
        ...                                   "sure: <answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0, 0.0]
    """

    def __init__(self, *, name: str = "answer_format_reward"):
        super().__init__(name)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return [1.0 if _is_single_plan_answer(text) else 0.0 for text in batch.texts]


def _is_single_plan_answer(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    whole_block = stripped.startswith(_ANSWER_OPEN) and stripped.endswith(_ANSWER_CLOSE)
    return whole_block and stripped.count(_ANSWER_OPEN) == 1 and parse_answer_strict(stripped) is not None


format_reward = FormatReward(strict=False)
format_reward_strict = FormatReward(strict=True)
answer_format_reward = AnswerFormatReward()
planning_accuracy_reward = make_planning_reward(
    "both", weighting=False, diversity="none", name="planning_accuracy_reward"
)
action_weight_reward = ActionWeightReward()
diversity_reward = DiversityReward("paper")
safety_penalty = SafetyPenalty()
speed_planning_reward = make_planning_reward("speed")
path_planning_reward = make_planning_reward("path")


# --------------------------------------------------------------------------------------------------------------------
# Registry: name -> factory(**options) -> callable named `name`. Options are those of
# `DrivingGRPOConfig.reward_options()`; each factory takes what it uses and ignores the rest.
# --------------------------------------------------------------------------------------------------------------------


def _planning_factory(axis: str, name: str, fixed_diversity: str | None = None) -> Callable[..., PlanningReward]:
    def factory(
        *,
        diversity: str = "paper",
        diversity_cap: float = 0.2,
        diversity_weight: float = 0.4,
        speed_weights: Mapping[str, float] | None = None,
        path_weights: Mapping[str, float] | None = None,
        **_ignored: Any,
    ) -> PlanningReward:
        return make_planning_reward(
            axis,
            diversity=fixed_diversity or diversity,
            weights=speed_weights if axis == "speed" else path_weights,
            diversity_cap=diversity_cap,
            diversity_weight=diversity_weight,
            name=name,
        )

    factory.__name__ = f"{name}_factory"
    return factory


def _format_factory(**_ignored: Any) -> FormatReward:
    return FormatReward(strict=False, name="format")


def _format_strict_factory(**_ignored: Any) -> FormatReward:
    return FormatReward(strict=True, name="format_strict")


def _answer_format_factory(**_ignored: Any) -> AnswerFormatReward:
    return AnswerFormatReward(name="answer_format")


def _planning_accuracy_factory(**_ignored: Any) -> PlanningReward:
    return make_planning_reward("both", weighting=False, diversity="none", name="planning_accuracy")


def _action_weight_factory(
    *, speed_weights: Mapping[str, float] | None = None, path_weights: Mapping[str, float] | None = None, **_ignored
) -> ActionWeightReward:
    return ActionWeightReward({**(speed_weights or {}), **(path_weights or {})}, name="action_weight")


def _diversity_factory(
    *, diversity: str = "paper", diversity_cap: float = 0.2, diversity_weight: float = 0.4, **_ignored: Any
) -> DiversityReward:
    return DiversityReward(diversity, cap=diversity_cap, weight=diversity_weight, name="diversity")


def _safety_factory(*, safety_penalty: float = 1.0, **_ignored: Any) -> SafetyPenalty:
    return SafetyPenalty(safety_penalty, name="safety")


REWARD_REGISTRY: dict[str, Callable[..., Callable]] = {
    "format": _format_factory,
    "format_strict": _format_strict_factory,
    "answer_format": _answer_format_factory,
    "planning_accuracy": _planning_accuracy_factory,
    "action_weight": _action_weight_factory,
    "diversity": _diversity_factory,
    "safety": _safety_factory,
    "speed_planning": _planning_factory("speed", "speed_planning"),
    "path_planning": _planning_factory("path", "path_planning"),
    "speed_planning_release": _planning_factory("speed", "speed_planning_release", fixed_diversity="release"),
    "path_planning_release": _planning_factory("path", "path_planning_release", fixed_diversity="release"),
}


def get_reward_funcs(names: str | Sequence[str], **options: Any) -> list[Callable]:
    """Reward callables for the registry `names`, in order, each named after its registry key (TRL logs
    `rewards/<name>/mean`). `options` are `DrivingGRPOConfig.reward_options()` (`diversity`, `diversity_cap`,
    `diversity_weight`, `speed_weights`, `path_weights`, `trajectory_scale`, `trajectory_labeller`); a reward ignores
    the options it does not take, and an option no reward takes (a misspelling) is an error naming the valid ones.
    `speed_planning` / `path_planning` follow the `diversity` option; the `_release` variants always use the release
    mode.

    Example:
        >>> [f.__name__ for f in get_reward_funcs("speed_planning_release, format", diversity_weight=0.5)]
        ['speed_planning_release', 'format']
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in names if name not in REWARD_REGISTRY]
    if unknown:
        raise ValueError(
            f"Unknown reward name(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(REWARD_REGISTRY)}."
        )
    valid = reward_option_names()
    misspelt = sorted(set(options) - valid)
    if misspelt:
        hints = [
            f"{option!r}"
            + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(option, valid, 1)) else "")
            for option in misspelt
        ]
        raise ValueError(f"Unknown reward option(s) {', '.join(hints)}; valid options: {', '.join(sorted(valid))}.")
    return [REWARD_REGISTRY[name](**options) for name in names]


def reward_option_names() -> frozenset[str]:
    """Every option some registry factory takes (its keyword-only parameters).

    Example:
        >>> sorted(reward_option_names())[:3]
        ['diversity', 'diversity_cap', 'diversity_weight']
    """
    return frozenset(
        parameter.name
        for factory in REWARD_REGISTRY.values()
        for parameter in inspect.signature(factory).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


# --------------------------------------------------------------------------------------------------------------------
# Trajectory mode (`alphadrive_trl.trajectory`): completions end with `<trajectory> [x,y] x6 </trajectory>`.
# The waypoints are scored against the expert `trajectory` column, the stated meta-actions against those the
# waypoints imply (same labeller as the data), and the planning rewards above run on the implied meta-actions.
# Registry options: `trajectory_scale` (metres, accuracy) and `trajectory_labeller` (`heading`, the synthetic data's
# rules and the default, or `senna`; use the rules that labelled the training data).
# --------------------------------------------------------------------------------------------------------------------

TRAJECTORY_LABELLER_MODES: tuple[str, ...] = LABELLER_MODES  # the labeller that labels the data


def derived_words_heading(text: str, ego_speed: Any) -> AnswerWords:
    """Meta-actions implied by the completion's waypoints, `heading` labeller (a `predict` hook for the planning
    rewards, fed the `ego_speed` column)."""
    return derived_answer_words(text, ego_speed, mode="heading")


def derived_words_senna(text: str, ego_speed: Any) -> AnswerWords:
    """As `derived_words_heading`, with the `senna` labeller."""
    return derived_answer_words(text, ego_speed, mode="senna")


# Module-level functions (not partials) so the parse cache of `_safe_predict` is shared by every reward using them.
_DERIVED_PREDICTORS: dict[str, Predictor] = {"heading": derived_words_heading, "senna": derived_words_senna}


def _derived_predictor(labeller: str) -> Predictor:
    try:
        return _DERIVED_PREDICTORS[labeller]
    except KeyError:
        raise ValueError(
            f"`trajectory_labeller` must be one of {', '.join(TRAJECTORY_LABELLER_MODES)}, got {labeller!r}."
        ) from None


def _column_or_none(kwargs: Mapping[str, Any], column: str, n: int) -> list[Any]:
    """The values of `column`, one per completion, or `[None] * n` when the call has no such column (every row then
    lacks the value: the rewards score it like a missing cell)."""
    values = kwargs.get(column)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"Column `{column}` has {len(values)} values for {n} completions; they must be aligned.")
    return list(values)


def _with_ego_speed(kwargs: Mapping[str, Any], n: int) -> Mapping[str, Any]:
    """`kwargs` with an `ego_speed` column for the derived-action predictors (all None when the call has none)."""
    if kwargs.get("ego_speed") is not None:
        return kwargs
    return {**kwargs, "ego_speed": [None] * n}


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _log_mean(kwargs: Mapping[str, Any], name: str, values: Sequence[float]) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and values:
        log_metric(name, math.fsum(values) / len(values))


class TrajectoryAccuracyReward(_DrivingReward):
    """`exp(-ADE / scale)` between the completion's waypoints and the expert `trajectory` column, in (0, 1].

    ADE is the mean Euclidean distance (metres) over the 6 waypoints (`trajectory.l2_errors`); `scale` is the ADE
    (metres) at which the reward falls to 1/e (0.37). 0.0 when the completion has no parsable trajectory or one a car
    could not drive (`trajectory.is_plausible`, including the first step from the `ego_speed` column when present).
    A row without an expert trajectory scores 0.0 for every completion: the same value across its GRPO group, so it
    adds no advantage, and the registry's promise of finite floats holds. A call without a `trajectory` column at
    all is an error, as for the planning rewards without their ground truth. Logs `trajectory/ade` (over the parsed,
    plausible completions), `trajectory/parsed` and `trajectory/plausible` (shares of the rows with an expert
    trajectory).

    Example:
        >>> expert = [[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]]
        >>> shifted = "<trajectory> [5,1] [10,1] [15,1] [20,1] [25,1] [30,1] </trajectory>"  # ADE 1 m
        >>> [round(r, 4) for r in trajectory_accuracy_reward(completions=[shifted], trajectory=[expert])]
        [0.6065]
    """

    def __init__(
        self,
        scale: float = 2.0,
        *,
        max_speed: float = DEFAULT_MAX_SPEED,
        max_accel: float = DEFAULT_MAX_ACCEL,
        name: str = "trajectory_accuracy_reward",
    ):
        for option, value in (("trajectory_scale", scale), ("max_speed", max_speed), ("max_accel", max_accel)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{option}` must be a positive finite number, got {value!r}.")
        self.scale, self.max_speed, self.max_accel = float(scale), float(max_speed), float(max_accel)
        super().__init__(name)

    def __repr__(self) -> str:
        return f"<TrajectoryAccuracyReward {self.__name__} scale={self.scale}>"

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        if kwargs.get("trajectory") is None:
            raise ValueError(
                f"Reward '{self.__name__}' needs the expert waypoints: a `trajectory` column (6 [x, y] points per "
                f"row, e.g. from data_prep.synthetic or data_prep.nuscenes); the call had columns {sorted(kwargs)}."
            )
        experts = _column_or_none(kwargs, "trajectory", batch.size)
        speeds = _column_or_none(kwargs, "ego_speed", batch.size)
        rewards: list[float] = []
        ades, parsed, plausible = [], [], []
        for text, expert, speed in zip(batch.texts, experts, speeds):
            gt = as_waypoints(expert)
            if gt is None:
                rewards.append(0.0)
                continue
            pred = parse_trajectory(text)
            ok = pred is not None and is_plausible(
                pred, self.max_speed, self.max_accel, ego_speed=_finite_or_none(speed)
            )
            parsed.append(float(pred is not None))
            plausible.append(float(ok))
            if not ok:
                rewards.append(0.0)
                continue
            ade = l2_errors(pred, gt)["ade"]
            ades.append(ade)
            rewards.append(math.exp(-ade / self.scale))
        _log_mean(kwargs, "trajectory/ade", ades)
        _log_mean(kwargs, "trajectory/parsed", parsed)
        _log_mean(kwargs, "trajectory/plausible", plausible)
        return rewards


class TrajectoryConsistencyReward(_DrivingReward):
    """Do the stated meta-actions match the ones the completion's own waypoints imply?

    Per axis 1.0 when the `<answer>` names exactly the word the labeller derives from the waypoints (with the
    `ego_speed` column), else 0.0; the reward is the mean of the two axes: 1.0, 0.5 or 0.0. 0.0 when the waypoints
    are missing, unparsable or implausible (nothing to agree with). Needs no ground truth.

    Example:
        >>> text = ("<think> clear </think> <answer> KEEP, LEFT_CHANGE </answer> "
        ...         "<trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] [30,0] </trajectory>")
        >>> trajectory_consistency_reward(completions=[text], ego_speed=[10.0])  # waypoints say KEEP, STRAIGHT
        [0.5]
    """

    def __init__(self, labeller: str = "heading", *, name: str = "trajectory_consistency_reward"):
        self.labeller = labeller
        self.derive = _derived_predictor(labeller)
        super().__init__(name, predict=parse_answer)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        stated = self._predicted(batch, kwargs)
        derived = batch.predicted(self.derive, ("ego_speed",), _with_ego_speed(kwargs, batch.size))
        rewards = []
        for said, implied in zip(stated, derived):
            agree = [float(len(implied.axis(axis)) == 1 and said.axis(axis) == implied.axis(axis)) for axis in AXES]
            rewards.append(sum(agree) / len(agree))
        return rewards


class TrajectoryFormatReward(_DrivingReward):
    """1.0 when the completion is `<think>…</think> <answer>…</answer> <trajectory>…</trajectory>`, nothing else,
    with 6 parsable waypoints (`trajectory.is_trajectory_format`), else 0.0. `strict=True` also requires one SPEED
    and one PATH word and the canonical `[x,y]` one-decimal waypoints.

    Example:
        >>> good = ("<think> clear </think> <answer> KEEP, STRAIGHT </answer> "
        ...         "<trajectory> [5.0,0.0] [10.0,0.0] [15.0,0.0] [20.0,0.0] [25.0,0.0] [30.0,0.0] </trajectory>")
        >>> format_trajectory_reward(completions=[good, "<think> clear </think> <answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0]
    """

    def __init__(self, strict: bool = False, *, name: str | None = None):
        self.strict = strict
        super().__init__(name or ("format_trajectory_reward_strict" if strict else "format_trajectory_reward"))

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return [1.0 if is_trajectory_format(text, strict=self.strict) else 0.0 for text in batch.texts]


class TrajectoryPlanningReward(PlanningReward):
    """A `PlanningReward` whose predicted words are derived from the waypoints (`predict_columns=("ego_speed",)`);
    rows without an ego speed imply no meta-actions (score 0.0) instead of failing the call."""

    def _predicted(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[AnswerWords]:
        return super()._predicted(batch, _with_ego_speed(kwargs, batch.size))


def make_trajectory_planning_reward(axis: str, *, labeller: str = "heading", **options: Any) -> PlanningReward:
    """A planning reward (`make_planning_reward`) on the meta-actions derived from the predicted waypoints instead of
    the stated answer: the labeller `labeller` reads the parsed, plausible waypoints and the `ego_speed` column.
    `options` are those of `make_planning_reward` (weighting, diversity, weights, name, ...).

    Example:
        >>> reward = make_trajectory_planning_reward("speed", diversity="none", name="speed_from_waypoints")
        >>> stop = "<trajectory> [2.2,0] [3.9,0] [5.0,0] [5.6,0] [5.8,0] [5.8,0] </trajectory>"  # brakes to rest
        >>> reward(completions=[stop], speed_action=["STOP"], ego_speed=[5.0])
        [1.0]
    """
    options.setdefault("name", f"{axis}_planning_trajectory_reward")
    options.setdefault("metric_prefix", "trajectory_planning")
    return TrajectoryPlanningReward(
        axis, predict=_derived_predictor(labeller), predict_columns=("ego_speed",), **options
    )


trajectory_accuracy_reward = TrajectoryAccuracyReward()
trajectory_consistency_reward = TrajectoryConsistencyReward()
format_trajectory_reward = TrajectoryFormatReward(strict=False)
format_trajectory_reward_strict = TrajectoryFormatReward(strict=True)
speed_planning_trajectory_reward = make_trajectory_planning_reward("speed")
path_planning_trajectory_reward = make_trajectory_planning_reward("path")


def _trajectory_accuracy_factory(*, trajectory_scale: float = 2.0, **_ignored: Any) -> TrajectoryAccuracyReward:
    return TrajectoryAccuracyReward(trajectory_scale, name="trajectory_accuracy")


def _trajectory_consistency_factory(
    *, trajectory_labeller: str = "heading", **_ignored: Any
) -> TrajectoryConsistencyReward:
    return TrajectoryConsistencyReward(trajectory_labeller, name="trajectory_consistency")


def _format_trajectory_factory(**_ignored: Any) -> TrajectoryFormatReward:
    return TrajectoryFormatReward(strict=False, name="format_trajectory")


def _format_trajectory_strict_factory(**_ignored: Any) -> TrajectoryFormatReward:
    return TrajectoryFormatReward(strict=True, name="format_trajectory_strict")


def _trajectory_planning_factory(axis: str, name: str) -> Callable[..., PlanningReward]:
    def factory(
        *,
        diversity: str = "paper",
        diversity_cap: float = 0.2,
        diversity_weight: float = 0.4,
        speed_weights: Mapping[str, float] | None = None,
        path_weights: Mapping[str, float] | None = None,
        trajectory_labeller: str = "heading",
        **_ignored: Any,
    ) -> PlanningReward:
        return make_trajectory_planning_reward(
            axis,
            labeller=trajectory_labeller,
            diversity=diversity,
            weights=speed_weights if axis == "speed" else path_weights,
            diversity_cap=diversity_cap,
            diversity_weight=diversity_weight,
            name=name,
        )

    factory.__name__ = f"{name}_factory"
    return factory


__all__ += [
    "TrajectoryAccuracyReward",
    "TrajectoryConsistencyReward",
    "TrajectoryFormatReward",
    "TrajectoryPlanningReward",
    "format_trajectory_reward",
    "format_trajectory_reward_strict",
    "make_trajectory_planning_reward",
    "path_planning_trajectory_reward",
    "speed_planning_trajectory_reward",
    "trajectory_accuracy_reward",
    "trajectory_consistency_reward",
]

REWARD_REGISTRY.update(
    {
        "trajectory_accuracy": _trajectory_accuracy_factory,
        "trajectory_consistency": _trajectory_consistency_factory,
        "format_trajectory": _format_trajectory_factory,
        "format_trajectory_strict": _format_trajectory_strict_factory,
        "speed_planning_trajectory": _trajectory_planning_factory("speed", "speed_planning_trajectory"),
        "path_planning_trajectory": _trajectory_planning_factory("path", "path_planning_trajectory"),
    }
)
