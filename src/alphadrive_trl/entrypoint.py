"""Steps shared by the entry points (open-r1 layout): one-line errors for every command (`command`), recipe parsing
that names misspelt keys, logging set-up, finding the checkpoint to resume from, and train → save model + processor +
driving config → model card → push, then ending the run on every rank together (`end_run`).

Each entry point stays short and linear; only the steps that are identical in both stages live here.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the training stack loads in the functions that need it: `command` serves the light commands too
    import datasets
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from .configs import DrivingScriptArguments

TRACEBACK_ENV = "ALPHADRIVE_TRACEBACK"
# Errors a user's input causes (a wrong path, value or file): their message is the whole story. Any other exception
# is a bug or an environment problem, reported with its type and how to see the traceback.
_INPUT_ERRORS = (ValueError, OSError, ImportError)


def command(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command's `main(argv)` so that an exception ends it with one line on stderr, `PROG: error: ...`,
    and exit status 2 instead of a traceback; Ctrl-C ends it with status 130. `ALPHADRIVE_TRACEBACK=1` re-raises,
    for the full traceback.

    Example:
        >>> @command("alphadrive-demo")
        ... def main(argv=None):
        ...     raise ValueError("`max_steps` must be positive, got 0.")
        >>> main()  # doctest: +SKIP
        alphadrive-demo: error: `max_steps` must be positive, got 0.
    """

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                    raise
                sys.stderr.write(f"\n{prog}: interrupted; re-run the same command to resume (docs/errors.md).\n")
                raise SystemExit(130) from None
            except Exception as error:  # every failure ends in one line, unless asked for the traceback
                if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                    raise
                sys.stderr.write(f"{prog}: error: {error_line(error)}\n")
                raise SystemExit(2) from None

        return run

    return decorate


def error_line(error: BaseException) -> str:
    """The one-line message of `error`: its text for input errors, else its type, its text and how to see the
    traceback."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, _INPUT_ERRORS):
        return message
    return f"{type(error).__name__}: {message} (set {TRACEBACK_ENV}=1 for the full traceback)"


def parse_recipe(parser: TrlParser, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """`parser.parse_args_and_config`, failing on an unknown recipe key or flag with its name and the closest valid
    one (TRL's message lists the raw strings and suggests changing the dataclass)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    *parsed, from_recipe, from_cli = parser.parse_args_and_config(
        args=args, return_remaining_strings=True, separate_remaining_strings=True
    )
    valid = sorted(field.name for dataclass_type in parser.dataclass_types for field in fields(dataclass_type))
    recipe = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    problems = [_unknown_key(key, f"in recipe {recipe}", valid) for key in from_recipe[::2]]  # `--key value` pairs
    after_unknown_flag = False
    for item in from_cli:
        if item.startswith("-"):
            problems.append(_unknown_key(item, "on the command line", valid))
            after_unknown_flag = True
        elif not after_unknown_flag:  # values after an unknown flag are its values
            problems.append(f"unexpected argument {item!r} on the command line (values follow a `--key`)")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(parsed)


def _unknown_key(item: str, where: str, valid: list[str]) -> str:
    key = item.lstrip("-").split("=", 1)[0]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean `{close[0]}`?" if close else "remove it; `--help` lists the valid keys"
    return f"unknown key `{key}` {where} ({hint})"


def check_model_path(model_name_or_path: str, option: str = "`model_name_or_path`") -> None:
    """Fail with a clear message when `model_name_or_path` is clearly a local path (absolute, `./`, `../`, `~`, or
    more than one `/`) that does not exist; transformers would report it as a malformed Hub repo id. `option` is how
    the message names the setting."""
    name = str(model_name_or_path)
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if looks_local and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(
            f"{option} {name!r} does not exist; point it at a saved model directory (e.g. the output_dir of the SFT "
            "run) or a Hub model id such as Qwen/Qwen2-VL-2B-Instruct."
        )


def load_stage_splits(
    script_args: DrivingScriptArguments, wants_eval: bool, eval_hint: str, logger: logging.Logger
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The recipe's train split, cut to this stage's part (`split_for_stages`: same fraction and seed in both
    recipes, so the stages never share a row) and to `max_train_samples`; with `wants_eval`, the test split cut to
    `max_eval_samples`. A missing split fails with the splits the dataset has (`eval_hint`: how to turn evaluation
    off in this stage's recipe)."""
    from .data import load_driving_dataset, repeat_action_rows, split_for_stages

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
    if script_args.repeat_actions or script_args.repeat_navigation_overrides > 1:
        rows = len(train)
        train = repeat_action_rows(train, script_args.repeat_actions, script_args.repeat_navigation_overrides)
        logger.info(
            f"repeat_actions {script_args.repeat_actions}, repeat_navigation_overrides "
            f"{script_args.repeat_navigation_overrides}: {rows} train rows -> {len(train)}."
        )
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
    import datasets
    import transformers

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


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR


def incomplete_reason(checkpoint_dir: str) -> str | None:
    """Why `checkpoint_dir` cannot be resumed from, or None when it is complete.

    The Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states, so a run
    killed while saving leaves a checkpoint without it (or with it cut short); DeepSpeed checkpoints keep their weights
    in `global_step*/`.
    """
    state_path = os.path.join(checkpoint_dir, "trainer_state.json")
    if not os.path.isfile(state_path):
        return "no trainer_state.json"
    try:
        with open(state_path) as f:
            json.load(f)
    except (OSError, ValueError):
        return "trainer_state.json is cut short"
    has_weights = any(os.path.isfile(os.path.join(checkpoint_dir, name)) for name in _WEIGHT_FILES)
    has_deepspeed = any(name.startswith("global_step") for name in os.listdir(checkpoint_dir))
    if not (has_weights or has_deepspeed):
        return "no model weights"
    return None


def last_checkpoint(
    training_args: TrainingArguments, logger: logging.Logger, model_name_or_path: str | None = None
) -> str | None:
    """The newest complete `checkpoint-*` in the output directory, so re-running a killed command resumes it.

    A checkpoint a kill left half-written (`incomplete_reason`) is skipped with a warning, and the one before it is
    used. With `model_name_or_path`, warns when the checkpoint was trained from another model: resuming continues the
    checkpoint's weights, not the new model's.
    """
    from .configs import load_driving_config

    output_dir = training_args.output_dir
    if training_args.resume_from_checkpoint is not None or not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT_RE.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        checkpoint = os.path.join(output_dir, name)
        reason = incomplete_reason(checkpoint)
        if reason is not None:
            logger.warning(f"Skipping incomplete checkpoint {checkpoint} ({reason}; a run was stopped while saving).")
            continue
        logger.warning(f"Resuming training from {checkpoint}; delete it or set another `output_dir` to start over.")
        trained_from = load_driving_config(checkpoint, known_only=False).get("model_name_or_path")
        if model_name_or_path is not None and trained_from is not None and trained_from != model_name_or_path:
            logger.warning(
                f"{checkpoint} was trained from {trained_from!r}, not from `model_name_or_path` "
                f"{model_name_or_path!r}: resuming continues the checkpoint's weights. Set another `output_dir` to "
                f"train {model_name_or_path!r} from the start."
            )
        return checkpoint
    return None


def train_and_save(
    trainer: Trainer,
    script_args: DrivingScriptArguments,
    training_args: TrainingArguments,
    checkpoint: str | None,
    stage: str,
    logger: logging.Logger,
    model_name_or_path: str | None = None,
) -> None:
    """Train (resuming from `checkpoint` or the recipe's `resume_from_checkpoint`), then save the model, the processor
    and `alphadrive_config.json` (so evaluation rebuilds the same prompts; it also records `model_name_or_path`), a
    model card, and push when asked."""
    from .configs import save_driving_config

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
        save_driving_config(training_args.output_dir, script_args, model_name_or_path)
        trainer.create_model_card(
            dataset_name=script_args.dataset_name, tags=["alphadrive", "driving", stage, "vision-language"]
        )
    logger.info(f"Model, processor and driving config saved to {training_args.output_dir}")

    if training_args.push_to_hub:
        logger.info("Pushing to hub...")
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=["alphadrive", "driving", stage])


def end_run(trainer: Trainer) -> None:
    """Finish the trackers and destroy the process group, once every rank is here.

    Without the barrier, a rank that has nothing to save tears its gloo/NCCL group down while rank 0 still writes the
    weights; in CI that once aborted rank 1 ("terminate called without an active exception") and failed the launch.
    """
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):  # transformers >= 5.18
        trainer.end()
    else:
        trainer.accelerator.end_training()
