"""Steps shared by the `alphadrive_trl.sft` and `alphadrive_trl.grpo` entry points (open-r1 layout): logging set-up,
finding the checkpoint to resume from, and train → save model + processor + driving config → model card → push.

Each entry point stays short and linear; only the steps that are identical in both stages live here.
"""

from __future__ import annotations

import logging
import os
import sys

import datasets
import transformers
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .configs import DrivingScriptArguments, save_driving_config
from .data import load_driving_dataset, split_for_stages


def load_stage_splits(
    script_args: DrivingScriptArguments, wants_eval: bool, eval_hint: str, logger: logging.Logger
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The recipe's train split, cut to this stage's part (`split_for_stages`: same fraction and seed in both
    recipes, so the stages never share a row) and to `max_train_samples`; with `wants_eval`, the test split cut to
    `max_eval_samples`. A missing split fails with the splits the dataset has (`eval_hint`: how to turn evaluation
    off in this stage's recipe)."""
    dataset = load_driving_dataset(script_args.dataset_name, validate=script_args.validate_dataset)
    if script_args.dataset_train_split not in dataset:
        raise ValueError(
            f"Dataset {script_args.dataset_name!r} has no split {script_args.dataset_train_split!r}; it has "
            f"{sorted(dataset)}. Set `dataset_train_split`."
        )
    train = dataset[script_args.dataset_train_split]
    if script_args.stage is not None:
        sft_part, grpo_part = split_for_stages(train, script_args.sft_fraction, seed=script_args.split_seed)
        train = sft_part if script_args.stage == "sft" else grpo_part
        logger.info(f"Stage {script_args.stage}: {len(train)} of {len(sft_part) + len(grpo_part)} train rows.")
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))

    evaluation = None
    if wants_eval:
        if script_args.dataset_test_split not in dataset:
            raise ValueError(
                f"Evaluation is on but the dataset has no split {script_args.dataset_test_split!r}; it has "
                f"{sorted(dataset)}. Set `dataset_test_split`, or {eval_hint}."
            )
        evaluation = dataset[script_args.dataset_test_split]
        if script_args.max_eval_samples is not None:
            evaluation = evaluation.select(range(min(script_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def setup_logging(training_args: TrainingArguments, logger: logging.Logger) -> None:
    """Log to stdout at the process's level (main process `info`, others `warning` by default)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def last_checkpoint(training_args: TrainingArguments, logger: logging.Logger) -> str | None:
    """The newest `checkpoint-*` in the output directory, so re-running a killed command resumes it."""
    found = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if found is not None and training_args.resume_from_checkpoint is None:
        logger.info(f"Checkpoint detected, resuming training at {found}.")
    return found


def train_and_save(
    trainer: Trainer,
    script_args: DrivingScriptArguments,
    training_args: TrainingArguments,
    checkpoint: str | None,
    stage: str,
    logger: logging.Logger,
) -> None:
    """Train (resuming from `checkpoint` or the recipe's `resume_from_checkpoint`), then save the model, the processor
    and `alphadrive_config.json` (so evaluation rebuilds the same prompts), a model card, and push when asked."""
    logger.info("*** Train ***")
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or checkpoint)
    metrics = train_result.metrics
    metrics["train_samples"] = len(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    logger.info("*** Save model ***")
    trainer.save_model(training_args.output_dir)  # the Trainer saves the processor with the weights
    if trainer.accelerator.is_main_process:
        save_driving_config(training_args.output_dir, script_args)
        trainer.create_model_card(
            dataset_name=script_args.dataset_name, tags=["alphadrive", "driving", stage, "vision-language"]
        )
    logger.info(f"Model, processor and driving config saved to {training_args.output_dir}")

    if training_args.push_to_hub:
        logger.info("Pushing to hub...")
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=["alphadrive", "driving", stage])
