"""Resuming Qwen-VL training from a Trainer checkpoint with the trained weights, not the initial ones.

transformers 5 saves Qwen-VL checkpoints in the original key layout (`visual.*`, `model.layers.*`) but
`Trainer._load_from_checkpoint` loads them with a plain non-strict `load_state_dict`, which matches no key and
silently resumes from the *initial* weights (QwenLM/Qwen3-VL#1763). `QwenVLCheckpointMixin` fixes it for any
Trainer subclass; put it first in the bases:

Example:
    >>> from trl import SFTTrainer
    >>> class MyTrainer(QwenVLCheckpointMixin, SFTTrainer): ...
"""

from __future__ import annotations

import logging

from accelerate.utils import is_peft_model
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


class QwenVLCheckpointMixin:
    """Loads full-model checkpoints through `from_pretrained` (which converts the key layout) on resume."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Reload through `from_pretrained`, which applies the key conversion, and copy strictly so a mismatch fails
        # loudly. Adapters (PEFT) take the parent's path, which loads them correctly; DeepSpeed and FSDP restore their
        # own checkpoints and never come here.
        target = model if model is not None else self.model
        if is_peft_model(target) or not isinstance(target, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        logger.info(f"Loading model weights from {resume_from_checkpoint}.")
        restored = type(target).from_pretrained(resume_from_checkpoint, dtype=target.dtype)
        target.load_state_dict(restored.state_dict(), strict=True)
        del restored
