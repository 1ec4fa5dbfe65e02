"""AlphaDrive stage 1: supervised warm-up of a Qwen-VL model on reasoning-annotated driving data.

`DrivingSFTTrainer` is `trl.SFTTrainer` with `MultiImageCollator`, greedy `eval_*` driving metrics every
`eval_generation_steps` steps, and the resume fix of `checkpointing.QwenVLCheckpointMixin`; `main()` is the
`alphadrive-sft` entry point. `docs/sft.md` describes the trainer and lists the metrics.

Example:
    python -m alphadrive_trl.sft --config recipes/tiny-qwen2.5-vl/sft/config_demo.yaml
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml --num_processes 8 \\
        -m alphadrive_trl.sft --config recipes/Qwen2-VL-2B-Instruct/sft/config_alphadrive.yaml
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoProcessor, TrainerCallback, set_seed
from trl import ModelConfig, SFTTrainer, TrlParser, get_peft_config
from trl.models import unwrap_model_for_generation

from .actions import completion_to_text, parse_answer_strict
from .checkpointing import QwenVLCheckpointMixin
from .collator import MultiImageCollator
from .configs import DrivingScriptArguments, DrivingSFTConfig
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
from .image_budget import apply_image_budget
from .modeling import SaveDrivingConfigCallback, freeze_vision_modules, generate_answers, load_model
from .prompts import to_sft_example

logger = logging.getLogger(__name__)

GENERATION_METRICS: tuple[str, ...] = (
    "eval_parse_rate",
    "eval_speed_accuracy",
    "eval_path_accuracy",
    "eval_planning_accuracy",
)


class _GenerationEvalCallback(TrainerCallback):
    """Runs the trainer's generation-based driving evaluation every `eval_generation_steps` optimizer steps."""

    def __init__(self, trainer: DrivingSFTTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        every = getattr(args, "eval_generation_steps", 0)
        if every and state.global_step % every == 0:
            self.trainer.log_generation_metrics()
        return control


class DrivingSFTTrainer(QwenVLCheckpointMixin, SFTTrainer):
    """`trl.SFTTrainer` for driving VLMs: multi-image collator + generation-based driving metrics.

    Takes SFTTrainer's arguments, plus `max_image_tokens` (any family) or Qwen's `min_pixels` / `max_pixels`: the
    per-image budget given to the collator (`alphadrive_trl.image_budget`). The
    datasets are in TRL's prompt-completion form with an `images` column (`alphadrive_trl.prompts.to_sft_example`);
    a `sample_id` column is kept, when present, so collator errors name the sample.

    Example:
        >>> trainer = DrivingSFTTrainer(model, args=DrivingSFTConfig("out", eval_generation_steps=50),
        ...                             train_dataset=train, eval_dataset=test, processing_class=processor)
        >>> trainer.train()
        >>> trainer.generation_metrics()
        {'eval_parse_rate': 1.0, 'eval_speed_accuracy': 0.97, 'eval_path_accuracy': 1.0, 'eval_planning_accuracy': 0.97}
    """

    def __init__(
        self,
        model,
        args: DrivingSFTConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_image_tokens: int | None = None,
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DrivingSFTConfig(f"{os.path.basename(str(name).rstrip('/')) or 'model'}-SFT")
        if processing_class is None:
            processing_class = AutoProcessor.from_pretrained(
                model if isinstance(model, str) else model.config._name_or_path
            )
        if data_collator is None:
            data_collator = MultiImageCollator(
                processing_class,
                max_length=args.max_length,
                completion_only_loss=args.completion_only_loss is not False,
                pad_to_multiple_of=args.pad_to_multiple_of,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                max_image_tokens=max_image_tokens,
            )
        if getattr(args, "eval_generation_steps", 0) and eval_dataset is None:
            raise ValueError("`eval_generation_steps` is set but there is no eval dataset to generate on.")
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if getattr(args, "eval_generation_steps", 0):
            self.add_callback(_GenerationEvalCallback(self))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # The collator names failing samples by id; keep the column when the dataset has one.
        if self._is_vision_dataset and "sample_id" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "sample_id"]

    def _generation_rows(self, dataset: Dataset | None, num_samples: int | None) -> Dataset:
        if dataset is None:
            dataset = self.eval_dataset
            if isinstance(dataset, dict):
                dataset = next(iter(dataset.values()))
        if dataset is None:
            raise ValueError("No eval dataset: pass `dataset` or give the trainer an `eval_dataset`.")
        num_samples = self.args.eval_generation_samples if num_samples is None else num_samples
        return dataset.select(range(min(num_samples, len(dataset))))

    @torch.no_grad()
    def generation_metrics(self, dataset: Dataset | None = None, num_samples: int | None = None) -> dict[str, float]:
        """Greedy answers for the first `num_samples` rows of `dataset` (default: the eval split), scored against
        the plan in each row's completion. Every process answers its share; the counts are summed over processes."""
        rows = self._generation_rows(dataset, num_samples)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        batch_size = self.args.per_device_eval_batch_size
        # Same number of batches on every process (ZeRO-3 generation is collective); -1 pads and is not counted.
        per_process = math.ceil(len(rows) / world)
        indices = list(range(rank, len(rows), world))
        indices += [-1] * (per_process - len(indices))
        counts = torch.zeros(5, device=self.accelerator.device)  # answered, parsed, speed ok, path ok, both ok
        processor = self.processing_class
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            was_training = model.training
            model.eval()
            for start in range(0, max(per_process, 1), batch_size):
                chunk = indices[start : start + batch_size]
                if not chunk:
                    break
                examples = [rows[max(i, 0)] for i in chunk]
                answers = self._generate(model, processor, examples)
                for index, example, answer in zip(chunk, examples, answers):
                    if index < 0:
                        continue
                    reference = parse_answer_strict(completion_to_text(example["completion"]))
                    predicted = parse_answer_strict(answer)
                    speed_ok = predicted is not None and reference is not None and predicted[0] == reference[0]
                    path_ok = predicted is not None and reference is not None and predicted[1] == reference[1]
                    counts += torch.tensor(
                        [1, predicted is not None, speed_ok, path_ok, speed_ok and path_ok],
                        dtype=counts.dtype,
                        device=counts.device,
                    )
            model.train(was_training)
        answered, parsed, speed, path, both = self.accelerator.reduce(counts, reduction="sum").tolist()
        total = max(answered, 1.0)
        return dict(zip(GENERATION_METRICS, (parsed / total, speed / total, path / total, both / total)))

    def _generate(self, model, processor, examples: list[dict[str, Any]]) -> list[str]:
        return generate_answers(
            model,
            processor,
            examples,
            max_new_tokens=self.args.eval_max_new_tokens,
            device=self.accelerator.device,
            do_sample=False,
            synced_gpus=self.is_deepspeed_enabled and self.accelerator.num_processes > 1,
        )

    def log_generation_metrics(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Compute `generation_metrics` and log them (console, `state.log_history`, trackers)."""
        metrics = self.generation_metrics(dataset)
        was_training = self.model.training
        # TRL's `log` merges its own per-mode metric buffers; in eval mode it takes the (empty) eval buffer and leaves
        # the train averages of the current logging window untouched.
        # Logging marks the step as logged (`should_log = False`); keep the regular training log of this step.
        should_log = self.control.should_log
        self.model.eval()
        self.log(dict(metrics))
        self.model.train(was_training)
        self.control.should_log = should_log
        return metrics


def load_sft_datasets(
    script_args: DrivingScriptArguments, training_args: DrivingSFTConfig
) -> tuple[Dataset, Dataset | None]:
    """The train (and, when evaluating, eval) datasets in TRL's prompt-completion form with an `images` column.

    With `stage: sft` the train split is the SFT part of `split_for_stages` (same fraction and seed as the GRPO
    recipe, so the stages never share a row).
    """
    wants_eval = training_args.eval_strategy != "no" or training_args.eval_generation_steps > 0
    hint = "`eval_strategy: no` and `eval_generation_steps: 0`"
    train, evaluation = load_stage_splits(script_args, wants_eval, hint, logger)

    def to_examples(split: Dataset) -> Dataset:
        options = {"template": script_args.prompt_template, "max_images": script_args.max_images}
        drop = [column for column in split.column_names if column not in ("sample_id", "images")]
        return split.map(to_sft_example, fn_kwargs=options, remove_columns=drop, desc="Building SFT examples")

    return to_examples(train), (to_examples(evaluation) if evaluation is not None else None)


def train_sft(
    script_args: DrivingScriptArguments,
    training_args: DrivingSFTConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> DrivingSFTTrainer:
    """Run the SFT warm-up as configured by the three argument dataclasses (what `main` does after parsing), with
    optional extra trainer callbacks. Returns the trainer."""
    set_seed(training_args.seed)
    setup_logging(training_args, logger)
    logger.info(f"Model parameters {model_args}")
    logger.info(f"Script parameters {script_args}")

    check_model_path(model_args.model_name_or_path)
    checkpoint = last_checkpoint(training_args, logger, model_args.model_name_or_path)

    train_dataset, eval_dataset = load_sft_datasets(script_args, training_args)

    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    apply_image_budget(processor, **script_args.image_budget())
    model = load_model(model_args, training_args)
    if script_args.freeze_vision_modules:
        logger.info(f"freeze_vision_modules: {freeze_vision_modules(model):,} vision parameters frozen.")
    apply_image_budget(processor, model=model)  # families whose model reads the budget too (LLaVA-OneVision)

    trainer = DrivingSFTTrainer(
        model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        callbacks=[SaveDrivingConfigCallback(script_args, model_args.model_name_or_path), *(callbacks or [])],
    )

    train_and_save(trainer, script_args, training_args, checkpoint, "sft", logger, model_args.model_name_or_path)
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((DrivingScriptArguments, DrivingSFTConfig, ModelConfig))


@command("alphadrive-sft")
def main(argv: list[str] | None = None) -> None:
    """`alphadrive-sft --config recipe.yaml [--flag value ...]`: CLI flags override the recipe."""
    script_args, training_args, model_args = parse_recipe(make_parser(), argv)
    trainer = train_sft(script_args, training_args, model_args)
    end_run(trainer)


if __name__ == "__main__":
    main()
