"""Every SFT recipe parses with TrlParser and builds its configs; the accelerate and DeepSpeed configs validate.

No weights are downloaded: recipes are parsed, not run (the tiny demo recipe runs in test_sft.py and `make sft`).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from deepspeed.runtime.config import DeepSpeedConfig
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
from trl import get_peft_config, get_quantization_config

from alphadrive_trl.sft import make_parser

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SFT_RECIPES = sorted(RECIPES.glob("*/sft/*.yaml"))
REAL_MODELS = ("Qwen2-VL-2B-Instruct", "Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen3-VL-2B-Instruct")
FULL_RECIPES = [RECIPES / model / "sft" / "config_alphadrive.yaml" for model in REAL_MODELS]
DEEPSPEED_JSONS = [RECIPES / "deepspeed" / "zero2.json", RECIPES / "deepspeed" / "zero3.json"]


def parse(recipe: Path, *overrides: str):
    # Real recipes train in bf16 on GPUs; `--use_cpu true` lets TrainingArguments build on this CPU-only machine.
    return make_parser().parse_args_and_config(args=["--config", str(recipe), "--use_cpu", "true", *overrides])


def ids(paths):
    return [str(path.relative_to(RECIPES)) for path in paths]


def test_every_real_model_and_variant_has_a_recipe():
    names = set(ids(SFT_RECIPES))
    for model in REAL_MODELS:
        assert f"{model}/sft/config_alphadrive.yaml" in names
    for model in ("Qwen2-VL-2B-Instruct", "Qwen2.5-VL-7B-Instruct"):
        assert {f"{model}/sft/config_lora.yaml", f"{model}/sft/config_qlora.yaml"} <= names
    assert "tiny-qwen2.5-vl/sft/config_demo.yaml" in names


@pytest.mark.parametrize("recipe", SFT_RECIPES, ids=ids(SFT_RECIPES))
def test_recipe_parses_and_builds_its_configs(recipe):
    script_args, training_args, model_args = parse(recipe)
    assert model_args.model_name_or_path and script_args.dataset_name and training_args.output_dir
    # Keys the parser does not know would be silently dropped by a typo; every YAML key must be a real field.
    known = set(vars(script_args)) | set(vars(training_args)) | set(vars(model_args))
    assert set(yaml.safe_load(recipe.read_text())) - known == set()
    peft_config = get_peft_config(model_args)
    assert (peft_config is not None) == model_args.use_peft
    quantization = get_quantization_config(model_args)
    if model_args.load_in_4bit:
        assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4" and peft_config is not None
    else:
        assert quantization is None


@pytest.mark.parametrize("model", REAL_MODELS)
def test_real_recipes_use_the_paper_settings(model):
    recipe = RECIPES / model / "sft" / "config_alphadrive.yaml"
    script_args, training_args, model_args = parse(recipe)
    assert model_args.model_name_or_path == f"Qwen/{model}"
    assert (training_args.learning_rate, training_args.lr_scheduler_type.value) == (2e-5, "cosine")
    assert (training_args.warmup_steps, training_args.num_train_epochs) == (0.1, 1)
    assert training_args.bf16 and model_args.dtype == "bfloat16"
    # Effective batch 128 on the 8 GPUs of the launch command in the header.
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * 8 == 128
    assert (script_args.max_pixels, script_args.stage, script_args.sft_fraction) == (401408, "sft", 0.2)
    assert training_args.max_length is None  # truncation would cut image tokens


@pytest.mark.parametrize(
    "recipe", [r for r in SFT_RECIPES if r.parent.parent.name in REAL_MODELS], ids=lambda r: str(r)
)
def test_sft_and_grpo_recipes_agree_on_the_split_and_the_handover(recipe):
    """GRPO trains on the rows SFT did not see (same data, fraction and seed) and starts from the SFT output.

    Pairs are matched by file name (`sft/config_trajectory.yaml` with `grpo/config_trajectory.yaml`); an SFT variant
    without a GRPO twin (QLoRA) is checked against the model's `config_alphadrive.yaml` for the split only. LoRA GRPO
    recipes start from the full SFT checkpoint, so only the plain variants hand over their `output_dir`.
    """
    twin = recipe.parent.parent / "grpo" / recipe.name
    grpo_recipe = twin if twin.is_file() else recipe.parent.parent / "grpo" / "config_alphadrive.yaml"
    if not grpo_recipe.is_file():
        pytest.skip(f"{grpo_recipe} not written yet")
    grpo = yaml.safe_load(grpo_recipe.read_text())
    script_args, training_args, _ = parse(recipe)
    keys = ("dataset_name", "sft_fraction", "split_seed") + (("prompt_template",) if twin.is_file() else ())
    for key in keys:
        assert getattr(script_args, key) == grpo.get(key, getattr(script_args, key)), key
    if twin.is_file() and not (recipe.stem.endswith("lora")):
        assert training_args.output_dir == grpo["model_name_or_path"]


def test_lora_recipes_fit_one_gpu_with_the_paper_batch():
    for model in ("Qwen2-VL-2B-Instruct", "Qwen2.5-VL-7B-Instruct"):
        for variant in ("lora", "qlora"):
            _, training_args, model_args = parse(RECIPES / model / "sft" / f"config_{variant}.yaml")
            assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == 128
            assert model_args.use_peft and model_args.lora_r == 64
            assert model_args.load_in_4bit == (variant == "qlora")
            assert training_args.output_dir.endswith(f"-sft-{variant}")


@pytest.mark.parametrize("ds_json", DEEPSPEED_JSONS, ids=lambda p: p.name)
@pytest.mark.parametrize("recipe", FULL_RECIPES, ids=lambda p: p.parent.parent.name)
def test_deepspeed_config_resolves_and_validates(recipe, ds_json):
    _, training_args, _ = parse(recipe)
    hf_config = HfTrainerDeepSpeedConfig(json.loads(ds_json.read_text()))
    hf_config.trainer_config_process(training_args)
    # Bucket sizes derive from the model's hidden size; any value exercises the resolution (no weights needed).
    hf_config.trainer_config_finalize(training_args, SimpleNamespace(config=SimpleNamespace(hidden_size=2048)), 1000)
    resolved = hf_config.config
    assert "auto" not in json.dumps(resolved)
    assert resolved["train_micro_batch_size_per_gpu"] == training_args.per_device_train_batch_size
    assert resolved["gradient_accumulation_steps"] == training_args.gradient_accumulation_steps
    assert resolved["gradient_clipping"] == training_args.max_grad_norm
    assert resolved["bf16"]["enabled"] is True and resolved["fp16"]["enabled"] is False
    ds_config = DeepSpeedConfig(resolved)
    assert ds_config.zero_optimization_stage == int(ds_json.stem[-1])
    assert (
        ds_config.train_batch_size
        == training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    )


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_accelerate_configs(name):
    config = yaml.safe_load((RECIPES / "accelerate_configs" / f"{name}.yaml").read_text())
    assert config["compute_environment"] == "LOCAL_MACHINE" and config["num_machines"] == 1
    if name == "ddp":
        assert config["distributed_type"] == "MULTI_GPU"
        return
    assert config["distributed_type"] == "DEEPSPEED"
    deepspeed = config["deepspeed_config"]
    ds_json = ROOT / deepspeed["deepspeed_config_file"]
    assert ds_json == RECIPES / "deepspeed" / f"{name}.json" and ds_json.is_file()
    assert json.loads(ds_json.read_text())["zero_optimization"]["stage"] == int(name[-1])
    assert deepspeed["zero3_init_flag"] is (name == "zero3")
    # With a DeepSpeed JSON, accelerate refuses these keys in its own config (they belong to the JSON / the recipe).
    assert not {"mixed_precision", "gradient_accumulation_steps", "gradient_clipping", "zero_stage"} & (
        set(config) | set(deepspeed)
    )


def test_sim_warm_up_repeats_the_rare_slow_down_label():
    # The expert slows down in 13 % of the highway-env rollouts; without repeating those rows the warm-up never
    # answered DECELERATE, and GRPO on unrepeated rows drove it back to 0 (benchmarks/results/sim_demo.md, section 8).
    script_args, _, _ = parse(RECIPES / "tiny-qwen2.5-vl" / "sft" / "config_sim_demo.yaml")
    assert script_args.repeat_actions == {"DECELERATE": 3} and script_args.stage == "sft"
    grpo = yaml.safe_load((RECIPES / "tiny-qwen2.5-vl" / "grpo" / "config_sim_demo.yaml").read_text())
    assert grpo["repeat_actions"] == {"DECELERATE": 3} and grpo["stage"] == "grpo"


def test_sim_facts_recipes_differ_from_the_vision_ones_only_where_documented():
    # The privileged-perception variant measures what perception costs: same data split, base, budget and schedule;
    # the scene in words in the prompt, ACCELERATE repeated too, and no `safety` reward in GRPO (section 14).
    tiny = RECIPES / "tiny-qwen2.5-vl"
    for stage, changed in (
        ("sft", {"prompt_template", "repeat_actions", "dataset_name", "output_dir"}),
        ("grpo", {"prompt_template", "repeat_actions", "dataset_name", "output_dir", "model_name_or_path",
                  "reward_funcs", "reward_weights", "safety_penalty"}),
    ):  # fmt: skip
        vision = yaml.safe_load((tiny / stage / "config_sim_demo.yaml").read_text())
        facts = yaml.safe_load((tiny / stage / "config_sim_demo_facts.yaml").read_text())
        assert {k for k in vision.keys() | facts.keys() if vision.get(k) != facts.get(k)} == changed
        assert facts["prompt_template"] == "answer_only_facts"
        assert facts["repeat_actions"] == {"DECELERATE": 3, "ACCELERATE": 3}
        assert facts["output_dir"] == f"outputs/sim-demo-facts/{stage}"
    assert facts["reward_funcs"] == ["speed_planning", "path_planning"] and "safety_penalty" not in facts
