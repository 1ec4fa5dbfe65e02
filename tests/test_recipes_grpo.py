"""Every GRPO recipe parses into the entry point's dataclasses and builds its config and rewards, offline.

No weights are loaded: a recipe for a 7B model must be checkable on a laptop. GPU recipes ask for bf16, which
`TrainingArguments` refuses on a CPU-only machine, so they are parsed with `--use_cpu true` there (a CLI override,
exactly what a user would type).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from alphadrive_trl.configs import DrivingGRPOConfig, DrivingScriptArguments
from alphadrive_trl.grpo import make_parser, resolve_reward_funcs
from alphadrive_trl.rewards import REWARD_REGISTRY

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*/grpo/*.yaml"))
REAL_RECIPES = [p for p in RECIPES if not p.parts[-3].startswith("tiny-")]
TINY = REPO / "recipes" / "tiny-qwen2.5-vl" / "grpo"
MODELS = ("Qwen2-VL-2B-Instruct", "Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen3-VL-2B-Instruct")
# The other families' recipes (checked in detail in test_recipes_families.py).
FAMILY_MODELS = ("SmolVLM2-2.2B-Instruct", "gemma-3-4b-it", "InternVL3-2B-hf", "llava-onevision-qwen2-0.5b-ov-hf")


def parse(recipe: Path, *overrides: str):
    argv = ["--config", str(recipe), *overrides]
    if not torch.cuda.is_available():
        argv += ["--use_cpu", "true"]
    return make_parser().parse_args_and_config(args=argv)


def recipe_id(path: Path) -> str:
    return str(path.relative_to(REPO / "recipes"))


def test_recipes_exist():
    assert {p.parts[-3] for p in REAL_RECIPES} == set(MODELS) | set(FAMILY_MODELS)
    for model in MODELS + FAMILY_MODELS:
        assert (REPO / "recipes" / model / "grpo" / "config_alphadrive.yaml").is_file()
    names = {p.name for p in RECIPES}
    assert {"config_lora.yaml", "config_qlora.yaml", "config_demo.yaml"} <= names
    for variant in ("acc", "acc_weight", "acc_weight_div", "full"):
        assert (TINY / f"config_ablation_{variant}.yaml").is_file()


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_parses_and_builds_config_and_rewards(recipe):
    keys = set(yaml.safe_load(recipe.read_text()))
    script_args, training_args, model_args = parse(recipe)
    assert isinstance(script_args, DrivingScriptArguments) and isinstance(training_args, DrivingGRPOConfig)
    # Every key of the YAML is a field of one of the three dataclasses (a typo would be silently ignored otherwise).
    known = {f for obj in (script_args, training_args, model_args) for f in vars(obj)} | {"model_revision"}
    assert keys <= known, keys - known
    # Values TRL defaults differently are written explicitly in every recipe.
    assert {"beta", "loss_type", "num_generations", "max_completion_length", "temperature", "learning_rate"} <= keys
    # RL runs on the part of the data the SFT warm-up did not see: same fraction and seed as the SFT recipe of the
    # same name (the sim demo splits its rollouts 30/70), else the paper's 20/80.
    twin = recipe.parent.parent / "sft" / recipe.name
    split = yaml.safe_load(twin.read_text()) if twin.is_file() else {}
    expected = (split.get("sft_fraction", 0.2), split.get("split_seed", 42))
    assert script_args.stage in ("grpo", None) and (script_args.sft_fraction, script_args.split_seed) == expected
    if recipe in REAL_RECIPES or recipe.parent == TINY and recipe.stem.startswith(("config_demo", "config_ablation")):
        assert script_args.stage == "grpo"
    funcs = resolve_reward_funcs(training_args.reward_funcs, **training_args.reward_options())
    assert [f.__name__ for f in funcs] == training_args.reward_funcs
    assert len(training_args.reward_weights) == len(funcs)
    assert training_args.generation_batch_size % training_args.num_generations == 0


@pytest.mark.parametrize("model", MODELS)
def test_paper_settings(model):
    script_args, args, model_args = parse(REPO / "recipes" / model / "grpo" / "config_alphadrive.yaml")
    assert (args.learning_rate, args.beta, args.num_generations) == (1e-6, 0.04, 2)
    assert (args.max_completion_length, args.temperature, args.loss_type) == (256, 1.0, "grpo")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 2)
    assert args.reward_funcs == ["speed_planning", "path_planning", "format"] and args.diversity_mode == "paper"
    assert args.bf16 and not args.use_vllm and not model_args.use_peft
    assert script_args.max_pixels == 401408
    # GRPO starts where the matching SFT recipe ends.
    sft_recipe = REPO / "recipes" / model / "sft" / "config_alphadrive.yaml"
    if sft_recipe.is_file():
        sft = yaml.safe_load(sft_recipe.read_text())
        assert model_args.model_name_or_path == sft["output_dir"]
        assert (sft.get("sft_fraction", 0.2), sft.get("split_seed", 42)) == (0.2, 42)
        assert sft.get("dataset_name") == script_args.dataset_name
    else:
        assert model_args.model_name_or_path == f"outputs/{model}-sft"


def test_paper_batch_over_16_gpus_holds_whole_groups(monkeypatch):
    # The paper trains on 16 GPUs: 1 completion per device x 16 x accumulation 2 = 32 = 16 prompts x 2 generations.
    monkeypatch.setattr(DrivingGRPOConfig, "world_size", property(lambda self: 16))
    _, args, _ = parse(REPO / "recipes" / "Qwen2-VL-2B-Instruct" / "grpo" / "config_alphadrive.yaml")
    assert args.generation_batch_size == 32 and args.steps_per_generation == 2
    # With 8 generations the same batch still holds whole groups; 3 generations would not (TRL refuses it).
    with pytest.raises(ValueError, match="divisible by num_generations"):
        parse(REPO / "recipes" / "Qwen2-VL-2B-Instruct" / "grpo" / "config_alphadrive.yaml", "--num_generations", "3")


def test_lora_and_qlora_variants():
    _, args, lora = parse(REPO / "recipes" / "Qwen2.5-VL-7B-Instruct" / "grpo" / "config_lora.yaml")
    assert lora.use_peft and not lora.load_in_4bit and lora.lora_r == 64 and args.beta == 0.04
    _, _, qlora = parse(REPO / "recipes" / "Qwen2.5-VL-7B-Instruct" / "grpo" / "config_qlora.yaml")
    assert qlora.use_peft and qlora.load_in_4bit and qlora.bnb_4bit_quant_type == "nf4"
    from trl import get_peft_config, get_quantization_config

    assert get_quantization_config(qlora).load_in_4bit
    assert set(get_peft_config(qlora).target_modules) >= {"q_proj", "v_proj"}


def test_vllm_options_are_written_and_valid():
    text = (REPO / "recipes" / "Qwen2-VL-2B-Instruct" / "grpo" / "config_alphadrive.yaml").read_text()
    assert "# vllm_mode: colocate" in text and "# vllm_mode: server" in text and "trl vllm-serve" in text
    # Uncommented, the colocate block parses (vLLM itself is only imported when the trainer starts).
    colocate = ("--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.3")
    _, args, _ = parse(REPO / "recipes" / "Qwen2-VL-2B-Instruct" / "grpo" / "config_alphadrive.yaml", *colocate)
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.3


def test_demo_recipe_runs_on_cpu_from_the_tiny_sft_output():
    script_args, args, model_args = parse(TINY / "config_demo.yaml")
    assert model_args.model_name_or_path == "outputs/demo-sft" and script_args.dataset_name == "data/synthetic"
    assert args.use_cpu and not args.bf16 and args.beta > 0 and 4 <= args.num_generations <= 8
    assert script_args.prompt_template == "answer_only" and script_args.stage == "grpo"
    assert args.reward_funcs == ["speed_planning", "path_planning", "safety"] and args.reward_weights == [1.0] * 3
    assert args.safety_penalty == 2.0 and args.reward_options()["safety_penalty"] == 2.0
    assert args.max_completion_length == 24 and args.lr_scheduler_type == "linear" and args.learning_rate == 1e-4
    assert args.output_dir == "outputs/demo-grpo"  # `make eval` reads it there
    reasoning, reasoning_args, reasoning_model = parse(TINY / "config_demo_reasoning.yaml")
    assert reasoning.prompt_template == "default" and "format" in reasoning_args.reward_funcs
    assert reasoning_model.model_name_or_path == "outputs/demo-reasoning/sft"
    assert reasoning_args.max_steps == args.max_steps  # the study compares the two arms at the same budget
    assert reasoning_args.beta == args.beta and reasoning_args.safety_penalty == args.safety_penalty
    assert set(args.reward_funcs) < set(reasoning_args.reward_funcs)  # ... and with the same rewards, plus format


def test_demo_recipes_hold_two_scenes_per_step_on_two_cpu_ranks(monkeypatch):
    # `make` launches the demo on 2 torchrun ranks: 8 completions per rank = one group of 8 per rank, 2 scenes a step.
    monkeypatch.setattr(DrivingGRPOConfig, "world_size", property(lambda self: 2))
    for name in (
        "config_demo.yaml",
        "config_demo_safety.yaml",
        "config_demo_coverage.yaml",
        "config_demo_expert.yaml",
        "config_demo_reasoning.yaml",
    ):
        _, args, _ = parse(TINY / name)
        assert (args.per_device_train_batch_size, args.num_generations) == (8, 8), name
        assert args.generation_batch_size == 16 and args.steps_per_generation == 1, name


def test_safety_recipe_is_the_demo_recipe_with_a_stronger_safety_penalty():
    _, demo, _ = parse(TINY / "config_demo.yaml")
    _, safe, _ = parse(TINY / "config_demo_safety.yaml")
    assert safe.reward_funcs == demo.reward_funcs and safe.reward_weights == demo.reward_weights
    assert (demo.safety_penalty, safe.safety_penalty) == (2.0, 3.0) and safe.reward_options()["safety_penalty"] == 3.0
    assert safe.output_dir == "outputs/demo-grpo-safety"
    same = ("learning_rate", "lr_scheduler_type", "beta", "num_generations", "max_steps", "max_completion_length")
    assert all(getattr(safe, key) == getattr(demo, key) for key in same)


def test_coverage_recipe_is_the_demo_recipe_with_a_stronger_kl_anchor():
    _, demo, _ = parse(TINY / "config_demo.yaml")
    _, coverage, _ = parse(TINY / "config_demo_coverage.yaml")
    assert (demo.beta, coverage.beta) == (0.1, 0.3)
    assert coverage.output_dir == "outputs/demo-grpo-coverage"
    differ = {"beta", "output_dir", "logging_dir", "distributed_state"}  # distributed_state: an object per config
    assert {k for k, v in vars(demo).items() if getattr(coverage, k) != v and k not in differ} == set()


def test_expert_recipe_is_the_demo_recipe_with_one_expert_sample_per_group():
    _, demo, _ = parse(TINY / "config_demo.yaml")
    _, expert, _ = parse(TINY / "config_demo_expert.yaml")
    assert (demo.expert_samples_per_group, expert.expert_samples_per_group) == (0, 1)
    assert expert.output_dir == "outputs/demo-grpo-expert"
    differ = {"expert_samples_per_group", "output_dir", "logging_dir", "distributed_state"}
    assert {k for k, v in vars(demo).items() if getattr(expert, k) != v and k not in differ} == set()


def test_ablation_recipes_differ_only_in_rewards():
    def rewards_of(variant):
        _, args, _ = parse(TINY / f"config_ablation_{variant}.yaml")
        return args

    acc, weight, div, full = (rewards_of(v) for v in ("acc", "acc_weight", "acc_weight_div", "full"))
    assert acc.diversity_mode == "none" and set(acc.speed_action_weights.values()) == {1.0}
    assert set(acc.path_action_weights.values()) == {1.0}
    assert weight.diversity_mode == "none" and weight.speed_action_weights is None
    assert div.diversity_mode == "paper" and div.reward_funcs == ["speed_planning", "path_planning"]
    assert full.diversity_mode == "paper" and full.reward_funcs == ["speed_planning", "path_planning", "format"]
    outputs = {a.output_dir for a in (acc, weight, div, full)}
    assert len(outputs) == 4
    # Apart from the reward section and output_dir, the four runs are identical.
    ignore = {
        "reward_funcs", "reward_weights", "diversity_mode", "speed_action_weights", "path_action_weights",
        "output_dir", "logging_dir", "run_name",
    }  # fmt: skip

    def settings(args):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in ignore}

    for other in (acc, weight, div):
        assert settings(other) == settings(full)


def test_accuracy_only_ablation_is_plain_f1():
    _, args, _ = parse(TINY / "config_ablation_acc.yaml")
    speed, path = resolve_reward_funcs(args.reward_funcs, **args.reward_options())
    # A hedging answer on a KEEP/STRAIGHT scene: speed F1 = 2*1/(2+1) = 2/3 with no weight or diversity factor.
    completions = ["<think> ? </think> <answer> KEEP, STOP, STRAIGHT </answer>", "<answer> KEEP, STRAIGHT </answer>"]
    columns = {"speed_action": ["KEEP"] * 2, "path_action": ["STRAIGHT"] * 2}
    assert speed(prompts=["p", "p"], completions=completions, **columns) == pytest.approx([2 / 3, 1.0])
    assert path(prompts=["p", "p"], completions=completions, **columns) == pytest.approx([1.0, 1.0])


def test_every_registry_reward_is_usable_from_a_recipe():
    names = [name for name in REWARD_REGISTRY if "trajectory" not in name]
    _, args, _ = parse(TINY / "config_demo.yaml", "--reward_funcs", *names)
    assert [f.__name__ for f in resolve_reward_funcs(args.reward_funcs, **args.reward_options())] == names
