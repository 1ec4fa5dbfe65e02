"""alphadrive-trl: AlphaDrive (GRPO for driving vision-language models) as an extension of Hugging Face TRL."""

import logging

__version__ = "0.1.0"


def _drop_optional_kernel_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes warns at import, on every CPU with AVX512-bf16, that the optional `kernels` package is missing. It
    # matters only to 4-bit (QLoRA) training on CPU, which runs without it on the built-in kernel; everywhere else it
    # is noise in every command.
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_optional_kernel_notice)
