"""AlphaDrive stage 2: GRPO with the driving rewards, from the SFT warm-up checkpoint.

`DrivingGRPOTrainer` is `trl.GRPOTrainer` with the recipe's rewards resolved by name (`DrivingGRPOConfig.reward_funcs`),
`driving/*` metrics of the sampled completions logged from its `_calculate_rewards` override, shared-prompt scoring
(`shared_prompt`: each prompt of a group runs once, from its `_get_per_token_logps_and_entropies` override), expert
guidance (`expert_samples_per_group`: the expert's completion in every group, from its `_generate` override;
`expert_guidance`) and the resume fix of `checkpointing.QwenVLCheckpointMixin`; `main()` is the `alphadrive-grpo`
entry point. `docs/grpo.md` describes the trainer and lists the metrics.

Example:
    python -m alphadrive_trl.grpo --config recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml --num_processes 8 \\
        -m alphadrive_trl.grpo --config recipes/Qwen2-VL-2B-Instruct/grpo/config_alphadrive.yaml
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoProcessor, TrainerCallback, set_seed
from trl import GRPOTrainer, ModelConfig, TrlParser, get_peft_config

from .actions import ALL_PLANS, completion_to_text, parse_answer_strict
from .checkpointing import QwenVLCheckpointMixin
from .configs import DrivingGRPOConfig, DrivingScriptArguments
from .data import DrivingDataError
from .entrypoint import (
    check_model_path,
    command,
    end_run,
    last_checkpoint,
    load_stage_splits,
    parse_recipe,
    setup_logging,
    train_and_save,
)
from .expert_guidance import expert_slots, replace_with_expert
from .image_budget import apply_image_budget
from .modeling import SaveDrivingConfigCallback, freeze_vision_modules, load_model
from .prompts import completion_text, to_grpo_example
from .rewards import format_reward, resolve_reward_funcs
from .shared_prompt import checkpointing_supported, shared_prompt_logps

logger = logging.getLogger(__name__)

DRIVING_METRICS: tuple[str, ...] = (
    "driving/speed_accuracy",
    "driving/path_accuracy",
    "driving/plan_accuracy",
    "driving/answer_rate",
    "driving/format_rate",
    "driving/distinct_plans_per_group",
)
_PLAN_INDEX = {plan: index for index, plan in enumerate(ALL_PLANS)}
# Columns of the per-completion statistics tensor built by `completion_statistics`.
_SPEED_OK, _PATH_OK, _FORMAT_OK, _PLAN = range(4)
# `_PLAN` of an expert completion put into the group (`expert_samples_per_group`): left out of the driving metrics,
# which describe the policy's own samples.
_EXPERT = -2


def ground_truth_plan(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """The reference `(speed, path)` of a dataset row: the `speed_action` / `path_action` columns, else the published
    `solution` column (`<answer> SPEED, PATH </answer>`); `(None, None)` when the row has neither."""
    speed, path = row.get("speed_action"), row.get("path_action")
    if speed and path:
        return speed, path
    parsed = parse_answer_strict(row.get("solution"))
    return parsed if parsed is not None else (None, None)


def completion_statistics(completions: Sequence[Any], rows: Sequence[dict[str, Any]]) -> torch.Tensor:
    """One row per completion: `[speed_correct, path_correct, format_ok, plan_index]` as floats.

    Correctness uses the strict parse (as evaluation does), so a hedging answer is wrong; it is NaN when the row has no
    ground truth. `plan_index` is the position of the parsed plan in `ALL_PLANS`, or -1 when the answer does not
    parse.

    Example:
        >>> completion_statistics(
        ...     ["<think> red light </think> <answer> STOP, STRAIGHT </answer>", "<answer> KEEP </answer>"],
        ...     [{"speed_action": "STOP", "path_action": "STRAIGHT"}] * 2,
        ... ).tolist()
        [[1.0, 1.0, 1.0, 15.0], [0.0, 0.0, 0.0, -1.0]]
    """
    formats = format_reward(completions=completions)
    stats = torch.empty(len(completions), 4, dtype=torch.float32)
    for i, (completion, row, format_ok) in enumerate(zip(completions, rows, formats, strict=True)):
        plan = parse_answer_strict(completion_to_text(completion))
        speed, path = ground_truth_plan(row)
        stats[i, _FORMAT_OK] = float(format_ok or 0.0)
        stats[i, _PLAN] = _PLAN_INDEX[plan] if plan is not None else -1
        if speed is None:
            stats[i, _SPEED_OK] = stats[i, _PATH_OK] = float("nan")
        else:
            stats[i, _SPEED_OK] = float(plan is not None and plan[0] == speed)
            stats[i, _PATH_OK] = float(plan is not None and plan[1] == path)
    return stats


def driving_metrics(stats: torch.Tensor, num_generations: int) -> dict[str, float]:
    """Aggregate `completion_statistics` of a whole generation batch (every process, groups of `num_generations`
    consecutive completions of one prompt) into the `DRIVING_METRICS` values. The share of groups without reward
    spread is TRL's own `frac_reward_zero_std`.

    Example:
        >>> stats = torch.tensor([[1.0, 1.0, 1.0, 15.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 3.0], [1.0, 0.0, 1.0, 3.0]])
        >>> m = driving_metrics(stats, num_generations=2)
        >>> m["driving/distinct_plans_per_group"], m["driving/plan_accuracy"]
        (1.5, 0.25)
    """
    stats = stats.float().cpu()
    plans = stats[:, _PLAN].long().view(-1, num_generations)
    distinct = [len({p for p in group.tolist() if p >= 0}) for group in plans]
    own = stats[stats[:, _PLAN] != _EXPERT]  # expert completions are not the policy's samples
    speed_ok, path_ok = own[:, _SPEED_OK], own[:, _PATH_OK]
    return {
        "driving/speed_accuracy": torch.nanmean(speed_ok).item(),
        "driving/path_accuracy": torch.nanmean(path_ok).item(),
        "driving/plan_accuracy": torch.nanmean(speed_ok * path_ok).item(),
        "driving/answer_rate": (own[:, _PLAN] >= 0).float().mean().item(),
        "driving/format_rate": own[:, _FORMAT_OK].mean().item(),
        "driving/distinct_plans_per_group": sum(distinct) / len(distinct),
    }


class _WithBatchNumImages:
    """Calls a LLaVA-OneVision model with `batch_num_images` (images per sequence), which TRL 1.16 leaves out of the
    loss forward. The processor encodes the images of a multi-image sample as base views only; without the count the
    model expects an anyres grid for every image and the pixel rows do not match (`split_with_sizes` error). TRL
    scores the sequences in order, chunk after chunk, so a cursor over `num_images` follows it."""

    def __init__(self, model, num_images: Sequence[int]):
        self._model, self._num_images, self._cursor = model, list(num_images), 0

    def __call__(self, **inputs):
        rows = inputs["input_ids"].shape[0]
        counts = self._num_images[self._cursor : self._cursor + rows]
        self._cursor += rows
        return self._model(**inputs, batch_num_images=torch.tensor(counts, device=inputs["input_ids"].device))

    def __getattr__(self, name):
        return getattr(self._model, name)


def _rows(tensor: torch.Tensor | None, start: int, end: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[start:end]


class DrivingGRPOTrainer(QwenVLCheckpointMixin, GRPOTrainer):
    """`trl.GRPOTrainer` with the driving rewards from the recipe, driving metrics in the logs, and shared-prompt
    scoring (`args.shared_prompt_scoring`, checked against TRL's pass on the first batch).

    Args:
        model: model id/path or model, as for `trl.GRPOTrainer`.
        reward_funcs: reward callables (or reward-model ids) as for `trl.GRPOTrainer`; `None` builds them from
            `args.reward_funcs` (registry names or dotted paths, `resolve_reward_funcs`) and `args.reward_options()`.
        args: a `DrivingGRPOConfig` (a plain `GRPOConfig` works when `reward_funcs` is given).
        prompt_template: the dataset's prompt template (`DrivingScriptArguments.prompt_template`); expert guidance
            writes the expert's completion in it.
        **kwargs: everything else `trl.GRPOTrainer` takes (datasets, `processing_class`, `peft_config`, ...).

    Example:
        >>> trainer = DrivingGRPOTrainer(  # doctest: +SKIP
        ...     "outputs/demo-sft",
        ...     args=DrivingGRPOConfig("outputs/demo-grpo", reward_funcs=["speed_planning", "path_planning", "format"]),
        ...     train_dataset=dataset.map(to_grpo_example),
        ... )
    """

    def __init__(self, model, reward_funcs=None, args=None, prompt_template="default", **kwargs):
        # Shared-prompt scoring: which models were checked against TRL's pass, and whether a check failed
        self._shared_prompt_checked: set[str] = set()
        self._shared_prompt_off = False
        # Expert guidance (`expert_samples_per_group`): the SFT target's template, the rows of the batch being
        # generated, and which of its completions are the expert's.
        self.prompt_template = prompt_template
        self._generation_rows: list[dict[str, Any]] | None = None
        self._expert_flags: list[bool] = []
        if reward_funcs is None:
            if not isinstance(args, DrivingGRPOConfig):
                raise ValueError("Pass `reward_funcs`, or a `DrivingGRPOConfig` whose `reward_funcs` names them.")
            reward_funcs = resolve_reward_funcs(args.reward_funcs, **args.reward_options())
        super().__init__(model, reward_funcs=reward_funcs, args=args, **kwargs)
        if self.ref_model is not None:
            # TRL loads the KL reference from the checkpoint path: give it the budget settings the model reads itself
            # (LLaVA-OneVision's anyres grid), as the policy got them.
            apply_image_budget(self.processing_class, model=self.accelerator.unwrap_model(self.ref_model))

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        num_images=None,
        batch_num_images=None,
        **kwargs,
    ):
        # TRL forwards every processor output on its no-grad paths (reference and old log-probs), LLaVA-OneVision's
        # `batch_num_images` included, which its own method does not accept (TypeError with beta > 0); its loss path
        # drops it instead. `num_images` carries the same counts per sequence, so both paths use it.
        if num_images is not None and any(n > 1 for n in num_images):
            config = getattr(self.accelerator.unwrap_model(model), "config", None)
            if getattr(config, "model_type", None) == "llava_onevision":
                model = _WithBatchNumImages(model, num_images)
        full_pass = functools.partial(
            super()._get_per_token_logps_and_entropies,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=batch_size,
            compute_entropy=compute_entropy,
            compute_aux_loss=compute_aux_loss,
            num_images=num_images,
            **kwargs,
        )
        if compute_aux_loss or not self._shared_prompt_applies(model, input_ids.size(1) - logits_to_keep, kwargs):
            return full_pass()
        shared_pass = functools.partial(
            self._shared_prompt_pass,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size or input_ids.size(0),
            compute_entropy,
            num_images,
            kwargs,
        )
        role = "reference" if model is self.ref_model else "policy"
        if role not in self._shared_prompt_checked:
            self._shared_prompt_checked.add(role)
            if not self._shared_prompt_matches(role, full_pass, shared_pass, attention_mask[:, -logits_to_keep:]):
                return full_pass()
        return shared_pass()

    # --- shared-prompt scoring (alphadrive_trl.shared_prompt) -------------------------------------------------------

    _SHARED_PROMPT_INPUTS = frozenset({"pixel_values", "image_grid_thw", "mm_token_type_ids"})

    def _shared_prompt_applies(self, model, prompt_length: int, model_inputs: dict[str, Any]) -> bool:
        if not getattr(self.args, "shared_prompt_scoring", True) or self._shared_prompt_off or prompt_length < 2:
            return False
        unwrapped = self.accelerator.unwrap_model(model)
        # (`is_activation_checkpointing` is the name from transformers 5.24; the old one warns on every read there)
        checkpointing = getattr(unwrapped, "is_activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(unwrapped, "is_gradient_checkpointing", False)
        if checkpointing and not checkpointing_supported():
            return False  # this transformers drops the cache from checkpointed layers (`shared_prompt`)
        # Qwen-VL's image inputs or none: other families' inputs (tiles, pixel masks, image sizes) keep TRL's pass
        return all(value is None or name in self._SHARED_PROMPT_INPUTS for name, value in model_inputs.items())

    def _shared_prompt_pass(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, num_images, model_inputs
    ):
        logps, entropies = [], []
        image_counts = list(num_images) if num_images is not None else None
        image_offsets = [0, *itertools.accumulate(image_counts)] if image_counts is not None else None
        thw = model_inputs.get("image_grid_thw")
        pixel_values = model_inputs.get("pixel_values")
        patch_offsets = [0, *itertools.accumulate(int(n) for n in thw.prod(dim=-1))] if thw is not None else None
        for start in range(0, input_ids.size(0), batch_size):  # TRL's chunks, for the same memory peak
            end = min(start + batch_size, input_ids.size(0))
            chunk = {"mm_token_type_ids": _rows(model_inputs.get("mm_token_type_ids"), start, end)}
            if pixel_values is not None:
                first_image, last_image = image_offsets[start], image_offsets[end]
                chunk["pixel_values"] = pixel_values[patch_offsets[first_image] : patch_offsets[last_image]]
                chunk["image_grid_thw"] = thw[first_image:last_image]
                chunk["num_images"] = image_counts[start:end]
            with self.accelerator.autocast():
                chunk_logps, chunk_entropies = shared_prompt_logps(
                    model,
                    input_ids[start:end],
                    attention_mask[start:end],
                    logits_to_keep,
                    compute_entropy=compute_entropy,
                    **chunk,
                )
            logps.append(chunk_logps)
            entropies.append(chunk_entropies)
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    def _shared_prompt_matches(self, role: str, full_pass, shared_pass, completion_mask) -> bool:
        """Compare both ways of scoring on the first batch (no gradient); on a mismatch or an error, switch
        shared-prompt scoring off for the run, with a warning that says why.

        The test is the mean absolute log-prob gap over the completion tokens. A wrong position or a wrong cache row
        moves every token; rounding moves a few: in bf16 TRL's own pass, run one row at a time instead of as one
        batch, differs from itself by 2e-2 on average (and 0.1 at most) on a random Qwen2-VL-2B, and the shared
        pass differs from it by as much (benchmarks/results/gpu_check.md). In float32 both gaps are below 1e-6."""
        try:
            with torch.no_grad():
                expected, _, _ = full_pass()
                got, _, _ = shared_pass()
            gaps = (expected - got).abs()[completion_mask.bool()].float()
            mean_gap, max_gap = (gaps.mean().item(), gaps.max().item()) if gaps.numel() else (0.0, 0.0)
        except Exception as error:  # a family or version this path does not know: TRL's pass is always right
            mean_gap, reason = float("inf"), f"{type(error).__name__}: {error}"
        else:
            reason = f"log-probs differ by {mean_gap:.2e} on average, {max_gap:.2e} at most"
        dtype = next(self.accelerator.unwrap_model(self.model).parameters()).dtype
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2
        if mean_gap <= tolerance:
            logger.info(f"Shared-prompt scoring ({role} model): matches TRL's full pass ({reason}).")
            return True
        self._shared_prompt_off = True
        logger.warning(
            f"Shared-prompt scoring does not match TRL's full pass on this model ({reason}; tolerance "
            f"{tolerance:g} on average); using TRL's pass for the rest of the run. Set `shared_prompt_scoring: "
            "false` to skip the check."
        )
        return False

    # --- expert guidance (alphadrive_trl.expert_guidance) -----------------------------------------------------------

    @property
    def _expert_per_group(self) -> int:
        # 0 with a plain `GRPOConfig`, which has no such field
        return getattr(self.args, "expert_samples_per_group", 0)

    def _generate_and_score_completions(self, inputs):
        self._generation_rows, self._expert_flags = inputs, []
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._generation_rows = None
        if self.model.training and self._expert_per_group:
            # How often the expert teaches: the share of its samples with a positive advantage (the group missed its
            # plan). NaN marks the policy's own samples, so every rank gathers a tensor of the same size.
            flags = torch.tensor(self._expert_flags or [False] * len(inputs), device=output["advantages"].device)
            positive = torch.where(flags, (output["advantages"] > 0).float(), torch.nan)
            share = torch.nanmean(self.accelerator.gather(positive)).item()
            if not math.isnan(share):  # NaN when no row of the batch had an expert plan
                self._metrics["train"]["driving/expert_positive_share"].append(share)
        return output

    def _generate(self, prompts):
        generated = super()._generate(prompts)
        if not self._expert_per_group or not self.model.training or self._generation_rows is None:
            return generated
        slots = expert_slots(
            len(prompts), self.accelerator.process_index, self.num_generations, self._expert_per_group
        )
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        # The end-of-turn token the policy stops on (`<|im_end|>` for Qwen-VL), as in the SFT targets.
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in self.eos_token_ids else self.eos_token_ids[0]
        generated, self._expert_flags = replace_with_expert(
            generated,
            self._generation_rows,
            slots,
            tokenizer,
            self.prompt_template,
            eos,
            self.args.max_completion_length,
        )
        return generated

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        # Every process computes its own completions' statistics; the gather makes prompt groups whole again, in the
        # same order as the gathered rewards.
        local_stats = completion_statistics(completions, inputs)
        if any(self._expert_flags):
            local_stats[torch.tensor(self._expert_flags), _PLAN] = _EXPERT
        stats = self.accelerator.gather(local_stats.to(self.accelerator.device))
        for name, value in driving_metrics(stats, num_generations).items():
            self._metrics[mode][name].append(value)
        if mode == "train" and self._expert_per_group:
            # From the gathered batch, so every rank logs the same share
            self._metrics[mode]["driving/expert_share"].append((stats[:, _PLAN] == _EXPERT).float().mean().item())
        return rewards_per_func


def check_completion_budget(
    rows, tokenizer, max_completion_length: int, template: str = "default", max_rows: int = 256
) -> float:
    """Share of the dataset's reference completions (the SFT targets: reasoning + answer) longer than
    `max_completion_length` tokens; warns when it is over 5 %.

    GRPO cuts a completion at `max_completion_length`: a model that learned to reason as long as its SFT targets then
    never reaches `<answer>`, every sample in a group scores 0 and the group teaches nothing. That failure is silent
    in TRL (only `completions/clipped_ratio` rises), so it is checked before training. Rows without reasoning
    (answer-only data) are measured too: their completions are just short. A length counts the text's tokens plus
    the end-of-turn token, which GRPO generates and counts against `max_completion_length` too.
    """
    # Without the image and prompt columns: iterating rows would otherwise decode every image.
    text_columns = [column for column in rows.column_names if column not in ("images", "prompt")]
    lengths = []
    for row in rows.select(range(min(max_rows, len(rows)))).select_columns(text_columns):
        try:
            text_ids = tokenizer(completion_text(row, template), add_special_tokens=False)["input_ids"]
            lengths.append(len(text_ids) + 1)  # + the end-of-turn token that closes a completion
        except DrivingDataError:  # e.g. no expert trajectory: nothing to measure, the rewards handle the row
            continue
    if not lengths:
        return 0.0
    lengths.sort()
    over = sum(length > max_completion_length for length in lengths) / len(lengths)
    if over > 0.05:
        p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
        logger.warning(
            f"{over:.0%} of the reference completions ({len(lengths)} rows sampled) are longer than "
            f"max_completion_length={max_completion_length} tokens (median {lengths[len(lengths) // 2]}, "
            f"95th percentile {p95}, max {lengths[-1]}). GRPO truncates those before the answer, so they score 0 and "
            f"their groups carry no signal. Set max_completion_length to at least {p95}."
        )
    return over


def load_grpo_datasets(script_args: DrivingScriptArguments, training_args: DrivingGRPOConfig):
    """The train (and, when evaluating, eval) datasets in TRL's conversational GRPO form.

    With `stage: grpo` the train split is the part the SFT warm-up did not see (`split_for_stages`, same fraction and
    seed as the SFT recipe). Rows keep their ground-truth columns; TRL passes them to the rewards.
    """
    if script_args.stage == "sft":
        logger.warning("`stage: sft` in a GRPO run trains on the SFT part of the split; use `stage: grpo`.")
    wants_eval = training_args.eval_strategy != "no"
    train, evaluation = load_stage_splits(script_args, wants_eval, "`eval_strategy: no`", logger)

    def to_conversations(split):
        options = {"template": script_args.prompt_template, "max_images": script_args.max_images}
        # Keep exactly the columns `to_grpo_example` returns (prompt, images and the ground truth).
        keep = set(to_grpo_example(split[0], **options))
        drop = [column for column in split.column_names if column not in keep]
        return split.map(to_grpo_example, fn_kwargs=options, remove_columns=drop, desc="Building GRPO prompts")

    return to_conversations(train), (to_conversations(evaluation) if evaluation is not None else None)


def train_grpo(
    script_args: DrivingScriptArguments,
    training_args: DrivingGRPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
    trainer_class: type[GRPOTrainer] = DrivingGRPOTrainer,
) -> GRPOTrainer:
    """Run GRPO as configured by the three argument dataclasses (what `main` does after parsing), with optional extra
    trainer callbacks. Returns the trainer; its `state.log_history` holds every logged reward and driving metric.
    `trainer_class` swaps in a subclass of yours, or plain `trl.GRPOTrainer` for a baseline with the same model, data
    and rewards (`benchmarks/gpu_check.py`)."""
    set_seed(training_args.seed)
    setup_logging(training_args, logger)
    logger.info(f"Model parameters {model_args}")
    logger.info(f"Script parameters {script_args}")

    # Rewards first: a misspelt name fails in a second, before the dataset and the model load.
    reward_funcs = resolve_reward_funcs(training_args.reward_funcs, **training_args.reward_options())
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(reward_funcs):
        raise ValueError(
            f"`reward_weights` has {len(training_args.reward_weights)} values for {len(reward_funcs)} rewards "
            f"({', '.join(training_args.reward_funcs)}); give one weight per reward, in the same order."
        )

    check_model_path(model_args.model_name_or_path)
    checkpoint = last_checkpoint(training_args, logger, model_args.model_name_or_path)

    train_dataset, eval_dataset = load_grpo_datasets(script_args, training_args)

    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        padding_side="left",  # generation appends on the right
    )
    apply_image_budget(processor, **script_args.image_budget())
    check_completion_budget(
        train_dataset,
        getattr(processor, "tokenizer", processor),
        training_args.max_completion_length,
        script_args.prompt_template,
    )

    # Loaded like the SFT stage does (dtype, attention, 4-bit placement for QLoRA); TRL builds the KL reference from
    # the same path when beta > 0 without LoRA, and disables the adapter for it with LoRA.
    model = load_model(model_args, training_args)
    if script_args.freeze_vision_modules:
        logger.info(f"freeze_vision_modules: {freeze_vision_modules(model):,} vision parameters frozen.")
    apply_image_budget(processor, model=model)  # families whose model reads the budget too (LLaVA-OneVision)

    extra = {"prompt_template": script_args.prompt_template} if issubclass(trainer_class, DrivingGRPOTrainer) else {}
    trainer = trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        **extra,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        callbacks=[SaveDrivingConfigCallback(script_args, model_args.model_name_or_path), *(callbacks or [])],
    )

    train_and_save(trainer, script_args, training_args, checkpoint, "grpo", logger, model_args.model_name_or_path)
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((DrivingScriptArguments, DrivingGRPOConfig, ModelConfig))


@command("alphadrive-grpo")
def main(argv: list[str] | None = None) -> None:
    """`alphadrive-grpo --config recipe.yaml [--flag value ...]`: CLI flags override the recipe."""
    script_args, training_args, model_args = parse_recipe(make_parser(), argv)
    trainer = train_grpo(script_args, training_args, model_args)
    end_run(trainer)


if __name__ == "__main__":
    main()
