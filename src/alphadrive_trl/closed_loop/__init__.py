"""Closed-loop driving in highway-env (optional `sim` extra): a policy drives and the episode is measured.

`scenarios` (environments, plan -> meta-action, navigation), `base` (the policy interface), `expert` (the rule-based
driver), `policies` (keep, random, a VLM checkpoint, `load_policy`), `episode` (`run_episode`, `summarize_episodes`),
`report` (`evaluate_policy`, `comparison_table`) and `cli` (`alphadrive-drive`, or `python -m
alphadrive_trl.closed_loop`). `docs/closed_loop.md` describes the scenarios, the policies and the metrics.
"""

from .base import Decision, DrivingContext, DrivingPolicy
from .cli import build_compare_parser, build_parser, main, split_policy_name
from .episode import METRIC_NAMES, EpisodeResult, StepRecord, run_episode, summarize_episodes
from .expert import ExpertPolicy
from .expert import _accelerating_distances as _accelerating_distances
from .expert import _leader_along_route as _leader_along_route
from .policies import BASELINE_POLICIES, KeepPolicy, RandomPolicy, VLMPolicy, frame_roles, load_policy
from .report import comparison_table, evaluate_policy, write_gif
from .scenarios import (
    DECISION_DT,
    DEFAULT_SCENARIOS,
    FALLBACK_META_ACTION,
    HIGHWAY_TARGET_SPEEDS,
    INTERSECTION_TARGET_SPEEDS,
    META_ACTIONS,
    POLICY_FREQUENCY,
    SCENARIOS,
    SIMULATION_FREQUENCY,
    Scenario,
    get_scenario,
    make_env,
    meta_action_index,
    parse_scenarios,
    plan_to_meta_action,
    require_highway_env,
    reset_env,
    route_navigation,
)

__all__ = [
    "BASELINE_POLICIES",
    "DECISION_DT",
    "DEFAULT_SCENARIOS",
    "FALLBACK_META_ACTION",
    "HIGHWAY_TARGET_SPEEDS",
    "INTERSECTION_TARGET_SPEEDS",
    "METRIC_NAMES",
    "META_ACTIONS",
    "POLICY_FREQUENCY",
    "SCENARIOS",
    "SIMULATION_FREQUENCY",
    "Decision",
    "DrivingContext",
    "DrivingPolicy",
    "EpisodeResult",
    "ExpertPolicy",
    "KeepPolicy",
    "RandomPolicy",
    "Scenario",
    "StepRecord",
    "VLMPolicy",
    "build_compare_parser",
    "build_parser",
    "comparison_table",
    "evaluate_policy",
    "frame_roles",
    "get_scenario",
    "load_policy",
    "main",
    "make_env",
    "meta_action_index",
    "parse_scenarios",
    "plan_to_meta_action",
    "require_highway_env",
    "reset_env",
    "route_navigation",
    "run_episode",
    "split_policy_name",
    "summarize_episodes",
    "write_gif",
]
