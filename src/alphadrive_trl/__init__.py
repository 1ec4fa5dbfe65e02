"""alphadrive-trl: AlphaDrive (GRPO for driving vision-language models) as an extension of Hugging Face TRL.

The names a user needs are importable from here; each is imported on first use, so `import alphadrive_trl` stays
instant (the trainers pull in torch, transformers and TRL). `docs/architecture.md` says which module owns what.

Example:
    >>> from alphadrive_trl import get_reward_funcs
    >>> [f.__name__ for f in get_reward_funcs(["speed_planning", "format"])]
    ['speed_planning', 'format']
"""

import importlib
import logging

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC_API = {
    # training
    "DrivingScriptArguments": "configs",
    "DrivingSFTConfig": "configs",
    "DrivingGRPOConfig": "configs",
    "DrivingSFTTrainer": "sft",
    "DrivingGRPOTrainer": "grpo",
    "MultiImageCollator": "collator",
    # data
    "load_driving_dataset": "data",
    "split_for_stages": "data",
    "build_prompt": "prompts",
    # rewards
    "REWARD_REGISTRY": "rewards",
    "get_reward_funcs": "rewards",
    "speed_planning_reward": "rewards",
    "path_planning_reward": "rewards",
    "format_reward": "rewards",
    # checkpoints and evaluation
    "load_checkpoint": "modeling",
    "generate_answers": "modeling",
    "compute_metrics": "evaluation",
    "parse_answer_strict": "actions",
}

__all__ = ["__version__", *_PUBLIC_API]


def __getattr__(name: str):
    if name not in _PUBLIC_API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC_API[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC_API))


def _drop_optional_kernel_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes warns at import, on every CPU with AVX512-bf16, that the optional `kernels` package is missing. It
    # matters only to 4-bit (QLoRA) training on CPU, which runs without it on the built-in kernel; everywhere else it
    # is noise in every command.
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_optional_kernel_notice)
