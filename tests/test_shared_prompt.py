"""Shared-prompt scoring (`alphadrive_trl.shared_prompt`): the same log-probs, entropies and gradients as TRL's full
pass over every (prompt + completion) row, with each distinct prompt run once; and the trainer's first-batch check."""

from __future__ import annotations

import logging

import pytest
import torch

from alphadrive_trl.shared_prompt import prompt_groups, shared_prompt_logps
from tests.conftest import make_driving_rows

GROUP = 3  # completions per prompt


def test_prompt_groups_splits_on_ids_mask_and_images():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [0, 5, 6], [0, 5, 6], [5, 6, 7], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1]] * 4 + [[1, 1, 1], [0, 1, 1]])
    images = [torch.zeros(2), torch.zeros(2), torch.ones(2), torch.ones(2), torch.ones(2), torch.ones(2)]
    first_rows, group_of_row = prompt_groups(ids, mask, images)
    # rows 0-1 share everything; row 2 has another image; row 4 other ids; row 5 repeats row 3 but not next to it
    assert first_rows.tolist() == [0, 2, 4, 5]
    assert group_of_row.tolist() == [0, 0, 1, 1, 2, 3]
    # the mask alone separates rows too (same ids, other padding)
    first_rows, _ = prompt_groups(torch.tensor([[1, 2], [1, 2]]), torch.tensor([[1, 1], [0, 1]]))
    assert first_rows.tolist() == [0, 1]


def _group_batch(model_dir: str, seed: int = 0):
    """TRL's layout for 3 prompts (1, 2 and 3 images: different lengths, so left padding) x GROUP completions of
    different lengths (right padding), and the model with TRL's fused LM head."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.utils import add_fused_lm_head

    from alphadrive_trl.prompts import build_prompt

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    rows = make_driving_rows(3, seed=seed)
    texts = [processor.apply_chat_template(build_prompt(row), add_generation_prompt=True) for row in rows]
    prompts = processor(
        text=texts, images=[row["images"] for row in rows], padding=True, padding_side="left", return_tensors="pt"
    )
    assert prompts["attention_mask"][:, 0].tolist().count(0) >= 1  # some rows really are left-padded

    generator = torch.Generator().manual_seed(seed)
    lengths = [4, 7, 2] * len(rows)
    completion_ids = torch.randint(10, model.config.text_config.vocab_size, (len(lengths), 7), generator=generator)
    completion_mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])
    repeat = torch.arange(len(rows)).repeat_interleave(GROUP)
    num_images = [len(row["images"]) for row in rows]
    patches = prompts["image_grid_thw"].prod(dim=-1)
    image_rows = torch.split(prompts["pixel_values"], [int(c.sum()) for c in torch.split(patches, num_images)])
    thw_rows = torch.split(prompts["image_grid_thw"], num_images)
    batch = {
        "input_ids": torch.cat([prompts["input_ids"][repeat], completion_ids], dim=1),
        "attention_mask": torch.cat([prompts["attention_mask"][repeat], completion_mask], dim=1),
        "pixel_values": torch.cat([image_rows[i] for i in repeat.tolist()]),
        "image_grid_thw": torch.cat([thw_rows[i] for i in repeat.tolist()]),
        "num_images": [num_images[i] for i in repeat.tolist()],
        "mm_token_type_ids": torch.cat(
            [prompts["mm_token_type_ids"][repeat], torch.zeros_like(completion_ids, dtype=torch.int)], dim=1
        ),
    }
    return model, batch, completion_mask, prompts["pixel_values"].size(0)


def _full_pass(model, batch, completions: int):
    """What TRL's `_get_per_token_logps_and_entropies` computes: every row in full."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-completions] = -100
    inputs = {key: value for key, value in batch.items() if key != "num_images"}
    outputs = model(**inputs, labels=labels, fused_lm_head=True)
    return outputs.log_probs[:, -completions:], outputs.entropy[:, -completions:]


def _gradients(model, logps, mask):
    model.zero_grad()
    # weights that differ per token, so that a wrong row or position would show in the gradient
    weights = torch.linspace(0.5, 1.5, logps.numel()).view_as(logps)
    (logps * weights * mask).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_same_logps_entropies_and_gradients_as_the_full_pass(tiny_model_dirs, arch):
    model, batch, completion_mask, distinct_patches = _group_batch(tiny_model_dirs[arch])
    completions = completion_mask.size(1)
    encoded = []
    hook = model.model.visual.register_forward_hook(lambda module, args, output: encoded.append(args[0].size(0)))

    expected, expected_entropy = _full_pass(model, batch, completions)
    expected_grads = _gradients(model, expected, completion_mask)
    encoded_full = sum(encoded)
    encoded.clear()
    got, entropy = shared_prompt_logps(model, logits_to_keep=completions, compute_entropy=True, **batch)
    grads = _gradients(model, got, completion_mask)
    hook.remove()

    valid = completion_mask.bool()
    assert got.shape == expected.shape == (9, completions)
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy[valid], expected_entropy[valid], atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and any("visual" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    # the images were encoded once per prompt, not once per completion
    assert encoded_full == GROUP * distinct_patches and sum(encoded) == distinct_patches


def test_text_only_rows_match_too(tiny_model_dir):
    """No images (e.g. a text-only prompt): the positions are the model's default ones."""
    model, batch, completion_mask, _ = _group_batch(tiny_model_dir, seed=1)
    vocab = model.config.text_config.vocab_size
    text_batch = {
        "input_ids": batch["input_ids"].clamp(max=vocab - 1) % 200 + 10,  # no image placeholder tokens left
        "attention_mask": batch["attention_mask"],
    }
    completions = completion_mask.size(1)
    expected, _ = _full_pass(model, text_batch, completions)
    got, entropy = shared_prompt_logps(model, logits_to_keep=completions, **text_batch)
    valid = completion_mask.bool()
    assert entropy is None
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)


# --- in the trainer ------------------------------------------------------------------------------------------------


def _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path, **overrides):
    from alphadrive_trl.configs import DrivingGRPOConfig
    from alphadrive_trl.data import load_driving_dataset
    from alphadrive_trl.grpo import DrivingGRPOTrainer
    from alphadrive_trl.prompts import to_grpo_example

    settings = {
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,  # TRL's default is on, which keeps TRL's pass
        "reward_funcs": ["speed_planning", "path_planning"],
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 8,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "beta": 0.04,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
    }
    args = DrivingGRPOConfig(str(tmp_path), **{**settings, **overrides})
    dataset = load_driving_dataset(tiny_dataset_dir, split="train").map(to_grpo_example)
    return DrivingGRPOTrainer(tiny_model_dir, args=args, train_dataset=dataset)


def _logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_trainer_checks_once_and_trains_as_trl_does(tiny_model_dir, tiny_dataset_dir, tmp_path, caplog):
    shared = _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path / "shared")
    with caplog.at_level(logging.INFO, logger="alphadrive_trl.grpo"):
        shared.train()
    checks = [record.getMessage() for record in caplog.records if "Shared-prompt scoring" in record.getMessage()]
    assert len(checks) == 2 and all("matches TRL's full pass" in message for message in checks)  # policy, reference
    assert shared._shared_prompt_checked == {"policy", "reference"} and not shared._shared_prompt_off

    full = _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path / "full", shared_prompt_scoring=False)
    full.train()
    # same samples (same seed), same loss and KL up to float rounding
    assert _logged(shared, "reward") == _logged(full, "reward")
    for key in ("loss", "kl"):
        assert _logged(shared, key) == pytest.approx(_logged(full, key), rel=1e-3, abs=1e-6)


def test_trainer_falls_back_to_trl_on_a_mismatch(tiny_model_dir, tiny_dataset_dir, tmp_path, caplog, monkeypatch):
    import alphadrive_trl.grpo as grpo_module

    calls = []

    def off_by_a_bit(*args, **kwargs):
        calls.append(1)
        logps, entropies = shared_prompt_logps(*args, **kwargs)
        return logps + 0.1, entropies

    monkeypatch.setattr(grpo_module, "shared_prompt_logps", off_by_a_bit)
    trainer = _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path, max_steps=1)
    with caplog.at_level(logging.WARNING, logger="alphadrive_trl.grpo"):
        trainer.train()
    warnings = [record.getMessage() for record in caplog.records if "does not match" in record.getMessage()]
    assert len(warnings) == 1 and "log-probs differ by 1.00e-01 on average" in warnings[0]
    assert trainer._shared_prompt_off and len(calls) == 1  # checked once, never used after


def test_gradient_checkpointing_shares_the_policy_prompt_too(tiny_model_dir, tiny_dataset_dir, tmp_path, monkeypatch):
    """The real recipes checkpoint their layers: the policy shares its prompts there too, and where transformers
    cannot keep a cache in a checkpointed layer, the policy keeps TRL's pass (the reference still shares)."""
    import alphadrive_trl.grpo as grpo_module

    scored = []

    def recording(model, *args, **kwargs):
        scored.append(model)
        return shared_prompt_logps(model, *args, **kwargs)

    monkeypatch.setattr(grpo_module, "shared_prompt_logps", recording)
    trainer = _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path / "gc", max_steps=1, gradient_checkpointing=True)
    trainer.train()
    assert trainer._shared_prompt_checked == {"policy", "reference"} and not trainer._shared_prompt_off

    scored.clear()
    monkeypatch.setattr(grpo_module, "checkpointing_supported", lambda: False)
    trainer = _trainer(tiny_model_dir, tiny_dataset_dir, tmp_path / "old", max_steps=1, gradient_checkpointing=True)
    trainer.train()
    assert trainer._shared_prompt_checked == {"reference"}
    assert scored and all(model is trainer.ref_model for model in scored)


def test_same_gradients_under_gradient_checkpointing(tiny_model_dir):
    """Checkpointed layers replay the completion pass in backward: the read-only cache gives them the same prompt
    keys, so log-probs and gradients still equal TRL's full pass (checkpointed as well)."""
    model, batch, completion_mask, _ = _group_batch(tiny_model_dir, seed=2)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    completions = completion_mask.size(1)
    expected, _ = _full_pass(model, batch, completions)
    expected_grads = _gradients(model, expected, completion_mask)
    got, _ = shared_prompt_logps(model, logits_to_keep=completions, **batch)
    grads = _gradients(model, got, completion_mask)
    valid = completion_mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    # the layers are checkpointed again afterwards, and the class flag is back to transformers' default
    layers = model.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert type(layers[0])._can_checkpoint_with_cache is False


def test_a_dropped_cache_is_an_error_not_wrong_log_probs(tiny_model_dir, monkeypatch):
    """If the layers never read the prompt's cache (a transformers that drops it), the pass raises: the trainer's
    check then falls back to TRL's pass instead of training on completions scored without their prompt."""
    import alphadrive_trl.shared_prompt as shared_module

    model, batch, completion_mask, _ = _group_batch(tiny_model_dir)
    monkeypatch.setattr(shared_module, "_read_only", lambda cache: [0])  # as if no layer had read it
    with pytest.raises(RuntimeError, match="did not read the prompt's key/value cache"):
        shared_prompt_logps(model, logits_to_keep=completion_mask.size(1), **batch)
