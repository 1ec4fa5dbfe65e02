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
