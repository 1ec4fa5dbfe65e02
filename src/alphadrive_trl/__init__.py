"""alphadrive-trl: AlphaDrive (GRPO for driving vision-language models) as an extension of Hugging Face TRL."""

__version__ = "0.1.0"
