"""The AlphaDrive rewards as TRL reward callables, and a registry to name them from a recipe.

Every callable follows TRL's contract, `fn(prompts=None, completions=..., **kwargs) -> list[float | None]`, so a stock
`trl.GRPOTrainer` uses it unchanged. Ground truth comes from the `speed_action` / `path_action` columns (else a
`solution` column); a row without it scores `None` on the rewards that need it, and no completion makes a reward
raise. TRL logs each reward as `rewards/<__name__>/mean`.

- `planning.py`: the planning rewards (accuracy x action weight x diversity) and their parts;
- `format.py`: the `<think>`/`<answer>` format rewards; `trajectory.py`: the trajectory-mode rewards;
- `registry.py`: `REWARD_REGISTRY`, `get_reward_funcs`, and `resolve_reward_funcs` (registry names or dotted paths);
- `base.py`: the shared call signature and per-call preparation (parses, GRPO groups, ground truth).

`docs/rewards.md` gives the definitions and how to use them with a plain `trl.GRPOTrainer`.

Example:
    >>> from alphadrive_trl.rewards import get_reward_funcs
    >>> funcs = get_reward_funcs(["speed_planning", "path_planning", "format"])
    >>> [f.__name__ for f in funcs]
    ['speed_planning', 'path_planning', 'format']
    >>> funcs[0](prompts=["scene 1"], completions=["<think> red light </think> <answer> STOP, STRAIGHT </answer>"],
    ...          speed_action=["STOP"], path_action=["STRAIGHT"])
    [1.0]
"""

from .base import prompt_group_key
from .format import (
    AnswerFormatReward,
    FormatReward,
    answer_format_reward,
    format_reward,
    format_reward_strict,
    is_well_formatted,
)
from .planning import (
    DEFAULT_ACTION_WEIGHTS,
    DIVERSITY_MODES,
    ActionWeightReward,
    DiversityReward,
    FeasibleCoverageReward,
    PlanningReward,
    SafetyPenalty,
    action_weight_reward,
    diversity_reward,
    feasible_coverage_reward,
    make_planning_reward,
    path_planning_reward,
    planning_accuracy_reward,
    safety_penalty,
    speed_planning_reward,
)
from .registry import REWARD_REGISTRY, get_reward_funcs, resolve_reward_funcs, reward_option_names
from .trajectory import (
    TRAJECTORY_LABELLER_MODES,
    TrajectoryAccuracyReward,
    TrajectoryConsistencyReward,
    TrajectoryFormatReward,
    TrajectoryPlanningReward,
    format_trajectory_reward,
    format_trajectory_reward_strict,
    make_trajectory_planning_reward,
    path_planning_trajectory_reward,
    speed_planning_trajectory_reward,
    trajectory_accuracy_reward,
    trajectory_consistency_reward,
)

__all__ = [
    "DEFAULT_ACTION_WEIGHTS",
    "DIVERSITY_MODES",
    "REWARD_REGISTRY",
    "ActionWeightReward",
    "AnswerFormatReward",
    "DiversityReward",
    "FeasibleCoverageReward",
    "FormatReward",
    "PlanningReward",
    "SafetyPenalty",
    "TRAJECTORY_LABELLER_MODES",
    "TrajectoryAccuracyReward",
    "TrajectoryConsistencyReward",
    "TrajectoryFormatReward",
    "TrajectoryPlanningReward",
    "action_weight_reward",
    "answer_format_reward",
    "diversity_reward",
    "feasible_coverage_reward",
    "format_reward",
    "format_reward_strict",
    "format_trajectory_reward",
    "format_trajectory_reward_strict",
    "get_reward_funcs",
    "is_well_formatted",
    "make_planning_reward",
    "make_trajectory_planning_reward",
    "path_planning_reward",
    "path_planning_trajectory_reward",
    "planning_accuracy_reward",
    "prompt_group_key",
    "resolve_reward_funcs",
    "reward_option_names",
    "safety_penalty",
    "speed_planning_reward",
    "speed_planning_trajectory_reward",
    "trajectory_accuracy_reward",
    "trajectory_consistency_reward",
]
