"""Expert guidance for GRPO: the last `n` samples of every group are replaced by the expert's completion.

GRPO learns only from what the policy samples. Where the warm-up finds the expert's plan in one or two of a group's
samples, sharpening moves that mass to the plan it samples most and the scene's expert plan drops out of the
K-sample set (tuning log, sessions 13-14). Putting the expert's completion (the row's SFT target) into the group, as
off-policy guidance does (LUFFY, Yan et al. 2025), gives it a positive advantage exactly when the policy's own
samples miss it, and zero when they all find it, so the policy keeps mass on the expert plan where it is unsure and
is left alone where it is sure. `DrivingGRPOTrainer` applies it when `expert_samples_per_group > 0`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .data import DrivingDataError
from .prompts import PromptTemplate, completion_text


def expert_slots(num_local: int, process_index: int, num_generations: int, per_group: int) -> list[bool]:
    """Which of this process's `num_local` completions take the expert's place: the last `per_group` of every group.

    TRL lays the generation batch out as consecutive groups of `num_generations` completions of one prompt, split
    into equal contiguous slices per process, so a completion's place in its group follows from its global index.

    Example:
        >>> expert_slots(4, 1, 4, 1)  # global indices 4..7: one whole group, its last sample
        [False, False, False, True]
        >>> expert_slots(4, 0, 8, 2)  # the first half of a group of 8 lies on process 0
        [False, False, False, False]
    """
    if per_group <= 0:
        return [False] * num_local
    start = process_index * num_local
    return [(start + i) % num_generations >= num_generations - per_group for i in range(num_local)]


def expert_completion_ids(
    row: Mapping[str, Any], tokenizer, template: str | PromptTemplate, eos_token_id: int, max_length: int | None
) -> list[int] | None:
    """Token ids of the row's expert completion as the policy would generate it: the SFT target text, then the
    end-of-turn token, cut at `max_length` tokens like a sampled completion. `None` when the row has no expert plan
    (no ground truth, or a template whose target it lacks): that sample stays the policy's own.

    Example:
        >>> ids = expert_completion_ids(  # doctest: +SKIP
        ...     {"speed_action": "STOP", "path_action": "STRAIGHT"}, tokenizer, "answer_only", 713, 24
        ... )  # '<answer> STOP, STRAIGHT </answer>' + <|im_end|>
    """
    if not row.get("speed_action") or not row.get("path_action"):
        return None
    try:
        text = completion_text(row, template)
    except (DrivingDataError, KeyError):
        return None
    ids = [*tokenizer(text, add_special_tokens=False)["input_ids"], eos_token_id]
    return ids[:max_length] if max_length else ids


def replace_with_expert(
    generated: Sequence[Any],
    rows: Sequence[Mapping[str, Any]],
    slots: Sequence[bool],
    tokenizer,
    template: str | PromptTemplate,
    eos_token_id: int,
    max_length: int | None,
) -> tuple[list[Any], list[bool]]:
    """Put the expert's completion into the marked slots of TRL's `_generate` output.

    `generated` is `_generate`'s tuple (prompt ids, completion ids, tool mask, completions, sampling log-probs, extra
    fields, images, tool images). Completion ids and decoded completions are replaced; the sampling log-probs of an
    expert completion (only vLLM returns them) are `None`, which TRL's importance-sampling correction ignores.
    Returns the new tuple and, per completion, whether it is the expert's.
    """
    prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest = generated
    if tool_mask is not None:
        raise ValueError("expert_samples_per_group does not combine with tool calls or environment masks.")
    completion_ids, completions = list(completion_ids), list(completions)
    logprobs = list(logprobs) if logprobs is not None else None
    is_expert = [False] * len(completion_ids)
    for i, (row, slot) in enumerate(zip(rows, slots, strict=True)):
        ids = expert_completion_ids(row, tokenizer, template, eos_token_id, max_length) if slot else None
        if ids is None:
            continue
        text = tokenizer.decode(ids, skip_special_tokens=True)
        completion_ids[i] = ids
        # Same shape as TRL's decoded completion: conversational ([{"role", "content"}]) or plain text.
        completions[i] = [{"role": "assistant", "content": text}] if isinstance(completions[i], list) else text
        if logprobs is not None:
            logprobs[i] = [None] * len(ids)
        is_expert[i] = True
    return (prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest), is_expert
