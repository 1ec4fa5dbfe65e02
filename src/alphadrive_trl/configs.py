"""Argument dataclasses for the driving entry points, read by `trl.TrlParser` from a recipe YAML + CLI flags.

TRL's own `SFTConfig`, `GRPOConfig` and `ModelConfig` carry the trainer and model settings; the classes here add only
what driving needs (which data, which prompt, how many pixels per image, which rewards). Every field documents its
default and why.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trl import GRPOConfig, ScriptArguments, SFTConfig

from .rewards import DIVERSITY_MODES, TRAJECTORY_LABELLER_MODES
from .rewards.planning import check_coverage_k

DRIVING_CONFIG_NAME = "alphadrive_config.json"


def _one_of(values: tuple[str, ...]) -> str:
    """`'a', 'b' or 'c'`, for error messages."""
    quoted = [repr(value) for value in values]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _dict_from_json(name: str, value: Any) -> Any:
    """A dict-valued option as a dict: recipes give a mapping, the command line a JSON object string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`{name}` must be a dict or a JSON object string, got {value!r}.") from err


@dataclass
class DrivingScriptArguments(ScriptArguments):
    """Which driving data to train on and how a row becomes a prompt.

    `dataset_name` (inherited) is a `save_to_disk` directory, a parquet/JSONL file or folder, or a Hub dataset name.
    """

    prompt_template: str = field(
        default="default",
        metadata={
            "help": "Name of the prompt template in `alphadrive_trl.prompts.PROMPT_TEMPLATES`. `default` asks for a "
            "meta-action plan; `trajectory` also asks for 6 waypoints. Evaluation reuses the name saved with the "
            "checkpoint so training and evaluation build identical prompts."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Lower pixel budget per image (Qwen-VL `min_pixels`); None keeps the processor's value."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Upper pixel budget per image (Qwen-VL `max_pixels`; the paper uses 401408). Bounds visual "
            "tokens, and so memory, per image. None keeps the processor's value."
        },
    )
    max_image_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Most visual tokens one image may cost, for any model family: the family's hook in "
            "`alphadrive_trl.image_budget` turns it into its own setting (Qwen max_pixels, SmolVLM longest edge and "
            "splitting, LLaVA-OneVision anyres grid, InternVL max tiles, Gemma 3 pan-and-scan) and fails when the "
            "family cannot meet it. None keeps the processor's value. Excludes `max_pixels`."
        },
    )
    max_images: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many images per sample (front camera first, then history frames and other "
            "cameras in `image_roles` order). None keeps all."
        },
    )
    stage: str | None = field(
        default=None,
        metadata={
            "help": "`sft` or `grpo` takes the matching disjoint part of the train split (the paper warms up on a "
            "fraction of the data and runs RL on the rest); None (`--stage null` on the command line) uses the whole "
            "train split."
        },
    )
    sft_fraction: float = field(
        default=0.2,
        metadata={"help": "Share of the train split used for the SFT warm-up when `stage` is set (paper: 0.2-0.3)."},
    )
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the SFT/GRPO split; both stages must use the same value."}
    )
    repeat_actions: dict[str, int] | str | None = field(
        default=None,
        metadata={
            "help": "Show the train rows of rare classes more often: {action: times} (dict or JSON string), e.g. "
            '{"DECELERATE": 3} repeats every row whose speed or path action is DECELERATE 3 times in this stage\'s '
            "part of the train split (after the stage split, so the other stage never sees the copies). None "
            "repeats nothing."
        },
    )
    repeat_navigation_overrides: int = field(
        default=1,
        metadata={
            "help": "Show the train rows whose path departs from the navigation command (cones closing the lane on a "
            "`go straight` route, a lane change into a blocked lane: the scenes where the image, not the text, "
            "decides the path) this many times in this stage's part of the train split; 1 repeats nothing. "
            "A row that `repeat_actions` repeats too takes the larger count."
        },
    )
    freeze_vision_modules: bool = field(
        default=False,
        metadata={
            "help": "Train without updating the vision encoder (Qwen-VL: `visual`, its patch merger included; other "
            "families: the vision tower, their projector stays trainable). It still encodes every image; only its "
            "gradients and optimizer state are skipped."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training data (after the stage split); for quick runs."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the evaluation data; for quick runs."}
    )
    validate_dataset: bool = field(
        default=True,
        metadata={"help": "Check every row against the schema before training; errors name the row and field."},
    )

    def __post_init__(self):
        if isinstance(self.stage, str) and self.stage.strip().lower() in ("", "none", "null"):
            self.stage = None  # `--stage null` on the command line clears a recipe's stage
        if self.stage not in (None, "sft", "grpo"):
            raise ValueError(f"`stage` must be 'sft', 'grpo' or null, got {self.stage!r}.")
        if not 0.0 < self.sft_fraction < 1.0:
            raise ValueError(f"`sft_fraction` must be strictly between 0 and 1, got {self.sft_fraction}.")
        from .data import check_repeat_actions, check_repeat_count

        self.repeat_actions = _dict_from_json("repeat_actions", self.repeat_actions)
        if self.repeat_actions is not None:
            check_repeat_actions(self.repeat_actions)
        check_repeat_count(self.repeat_navigation_overrides, "`repeat_navigation_overrides`")
        for name in ("min_pixels", "max_pixels", "max_image_tokens", "max_images"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be positive or null, got {value}.")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"`min_pixels` ({self.min_pixels}) is larger than `max_pixels` ({self.max_pixels}).")
        if self.max_pixels is not None and self.max_image_tokens is not None:
            raise ValueError(
                "Set either `max_image_tokens` (any model family) or `max_pixels` (Qwen-VL only), not both."
            )

    def image_budget(self) -> dict[str, int | None]:
        """Keyword arguments for `alphadrive_trl.image_budget.apply_image_budget`."""
        return {
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "max_image_tokens": self.max_image_tokens,
        }


@dataclass
class DrivingSFTConfig(SFTConfig):
    """`trl.SFTConfig` plus generation-based driving metrics during evaluation."""

    eval_generation_steps: int = field(
        default=0,
        metadata={
            "help": "Every N training steps, generate answers for `eval_generation_samples` rows of the eval split "
            "and log parse rate and planning accuracy (`eval_planning_accuracy`, ...). 0 disables it."
        },
    )
    eval_generation_samples: int = field(
        default=64, metadata={"help": "How many eval rows the generation metrics use (greedy decoding)."}
    )
    eval_max_new_tokens: int = field(default=128, metadata={"help": "Generation length for the driving eval metrics."})


@dataclass
class DrivingGRPOConfig(GRPOConfig):
    """`trl.GRPOConfig` plus the driving rewards, named through the registry in `alphadrive_trl.rewards`."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["speed_planning", "path_planning", "format"],
        metadata={
            "help": "Reward names from `alphadrive_trl.rewards.REWARD_REGISTRY`, summed with `reward_weights`. "
            "Default: the AlphaDrive set (per-axis accuracy x action weight x diversity, plus format)."
        },
    )
    diversity_mode: str = field(
        default="paper",
        metadata={
            "help": "`paper`: multiply by 1 - min(cap, share of the group choosing the same word); `release`: the "
            "published code's additive +/- weight; `none`: no diversity term. Applies to the planning rewards."
        },
    )
    diversity_cap: float = field(default=0.2, metadata={"help": "Cap of the paper-mode diversity penalty."})
    diversity_weight: float = field(default=0.4, metadata={"help": "The +/- bonus of the release-mode diversity."})
    speed_action_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Per-action weights on the SPEED axis (dict or JSON string); None uses the AlphaDrive defaults "
            "(ACCELERATE 0.9, DECELERATE 1.0, STOP 1.0, KEEP 0.8)."
        },
    )
    path_action_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Per-action weights on the PATH axis (dict or JSON string); None uses the defaults (turns and "
            "lane changes 1.0, STRAIGHT 0.8)."
        },
    )
    safety_penalty: float = field(
        default=1.0,
        metadata={
            "help": "Size of the `safety` reward's penalty for answering ACCELERATE or KEEP where the expert stops or "
            "slows down. Add `safety` to `reward_funcs` to use it; the action weights cannot protect those classes "
            "under GRPO's per-group normalisation (docs/rewards.md)."
        },
    )
    coverage_k: int = field(
        default=4,
        metadata={
            "help": "Samples per set in the `feasible_coverage` reward: each completion is credited with the mean "
            "feasible coverage of the k-subsets of its group that hold it (pass@k for plan sets). Use k < "
            "num_generations; k = 1 rewards any feasible plan."
        },
    )
    expert_samples_per_group: int = field(
        default=0,
        metadata={
            "help": "Replace the last n of each group's `num_generations` samples by the expert's completion (the "
            "row's SFT target under the run's `prompt_template`): off-policy guidance. The expert sample gets a "
            "positive advantage when the group's own samples miss its plan and none when they all find it, so GRPO "
            "keeps mass on the expert plan where the policy is unsure (`alphadrive_trl.expert_guidance`). 0: plain "
            "GRPO."
        },
    )
    trajectory_scale: float = field(
        default=2.0,
        metadata={"help": "Metres of ADE at which `trajectory_accuracy` falls to 1/e (trajectory mode only)."},
    )
    trajectory_labeller: str = field(
        default="heading",
        metadata={
            "help": "Labeller that turns predicted waypoints into meta-actions for the trajectory rewards: `heading` "
            "(what the synthetic and highway-env data use) or `senna` (match data labelled with `--labeller senna`, "
            "e.g. nuScenes converted that way)."
        },
    )

    shared_prompt_scoring: bool = field(
        default=True,
        metadata={
            "help": "Score a group's completions with one forward pass of their shared prompt (its key/value cache "
            "repeated per completion) instead of TRL's full pass per sequence: the same log-probs and gradients, "
            "checked against TRL's on the first batch, with less work. Used for Qwen-VL and text-only models; "
            "other families keep TRL's pass (docs/grpo.md)."
        },
    )

    def __post_init__(self):
        if self.diversity_mode not in DIVERSITY_MODES:
            raise ValueError(f"`diversity_mode` must be {_one_of(DIVERSITY_MODES)}, got {self.diversity_mode!r}.")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError(
                f"`max_completion_length` must be at least 1 token, got {self.max_completion_length}; the answer "
                "alone needs about 15 and reasoning + answer about 150 (see `check_completion_budget`)."
            )
        check_coverage_k(self.coverage_k)
        if self.trajectory_labeller not in TRAJECTORY_LABELLER_MODES:
            raise ValueError(
                f"`trajectory_labeller` must be {_one_of(TRAJECTORY_LABELLER_MODES)}, got {self.trajectory_labeller!r}."
            )
        # `a,b` and `a b` both work on the command line (and a YAML list of either).
        items = [self.reward_funcs] if isinstance(self.reward_funcs, str) else self.reward_funcs
        self.reward_funcs = [name.strip() for item in items for name in str(item).split(",") if name.strip()]
        for name in ("speed_action_weights", "path_action_weights"):
            setattr(self, name, _dict_from_json(name, getattr(self, name)))
        super().__post_init__()
        if not 0 <= self.expert_samples_per_group < self.num_generations:
            raise ValueError(
                f"`expert_samples_per_group` must be between 0 and num_generations - 1 ({self.num_generations - 1}), "
                f"got {self.expert_samples_per_group}: each group needs samples of the policy's own to compare the "
                "expert's with."
            )

    def reward_options(self) -> dict[str, Any]:
        """Keyword options for `alphadrive_trl.rewards.get_reward_funcs`."""
        return {
            "diversity": self.diversity_mode,
            "diversity_cap": self.diversity_cap,
            "diversity_weight": self.diversity_weight,
            "speed_weights": self.speed_action_weights,
            "path_weights": self.path_action_weights,
            "trajectory_scale": self.trajectory_scale,
            "trajectory_labeller": self.trajectory_labeller,
            "safety_penalty": self.safety_penalty,
            "coverage_k": self.coverage_k,
        }


def save_driving_config(
    output_dir: str, script_args: DrivingScriptArguments, model_name_or_path: str | None = None
) -> str:
    """Write the data/prompt settings next to a checkpoint so evaluation rebuilds the same prompts, and the model the
    run started from (`model_name_or_path`, when given) so a resume into the same `output_dir` can say when the
    model changed."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, DRIVING_CONFIG_NAME)
    keep = ("prompt_template", "min_pixels", "max_pixels", "max_image_tokens", "max_images")
    payload = {k: v for k, v in asdict(script_args).items() if k in keep}
    if model_name_or_path is not None:
        payload["model_name_or_path"] = model_name_or_path
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path


def load_driving_config(model_dir: str, known_only: bool = True) -> dict[str, Any]:
    """Read the settings saved by `save_driving_config`; `{}` when the checkpoint has none (e.g. a Hub model). With
    `known_only` (the default) only `DrivingScriptArguments` fields are returned."""
    path = os.path.join(model_dir, DRIVING_CONFIG_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            payload = json.load(f)
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it or write it again.") from err
    if not known_only:
        return payload
    known = {f.name for f in fields(DrivingScriptArguments)}
    return {k: v for k, v in payload.items() if k in known}
