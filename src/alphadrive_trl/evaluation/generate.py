"""`generate`: run a checkpoint on a dataset split with its training prompts and append predictions (resumable)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_json
from .predictions import _done_sample_ids, metadata_path

logger = logging.getLogger(__name__)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _select_split(data: Any, split: str) -> Any:
    """`load_driving_dataset` returns a `Dataset` for a named split, a `DatasetDict` otherwise."""
    from datasets import DatasetDict

    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"Split {split!r} not in the dataset; available: {', '.join(data)}.")
        return data[split]
    return data


def generate_predictions(
    model: str,
    dataset: str,
    output: str | os.PathLike,
    *,
    split: str = "test",
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = True,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    max_samples: int | None = None,
    prompt_template: str | None = None,
    max_images: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_image_tokens: int | None = None,
    use_vllm: bool = False,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Run `model` on `dataset[split]` and append one prediction record per sample to `output` (JSONL).

    Prompts are built exactly as in training: `prompts.build_prompt` with the template and image budget saved next to
    the checkpoint (`configs.load_driving_config`); the keyword arguments override them. With `greedy`, `completion`
    is the greedy answer; with `num_samples` K > 1, `completions` also holds K answers sampled at `temperature`
    (without `greedy`, `completion` is the first sample). Samples whose `sample_id` is already in `output` are
    skipped, so an interrupted run resumes; every batch is flushed as soon as it is done. A `<output stem>.meta.json`
    sidecar records the settings (and `score` reads the dataset location from it for the trajectory overlay).

    Returns the predictions path.
    """
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {num_samples}.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}.")
    if not greedy and temperature <= 0:
        raise ValueError("Sampling without greedy decoding needs --temperature > 0.")
    if num_samples > 1 and temperature <= 0:
        raise ValueError(f"--num-samples {num_samples} samples answers, which needs --temperature > 0.")
    if use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "--use-vllm needs vLLM, which is not installed: `pip install 'alphadrive-trl[vllm]'` (GPU only), or "
                "drop --use-vllm to generate with transformers."
            )

    from ..configs import load_driving_config
    from ..data import load_driving_dataset
    from ..entrypoint import check_model_path

    check_model_path(model, "--model")
    saved = load_driving_config(model) if Path(model).is_dir() else {}
    settings = {
        "prompt_template": prompt_template or saved.get("prompt_template") or "default",
        "max_images": max_images if max_images is not None else saved.get("max_images"),
        "min_pixels": min_pixels if min_pixels is not None else saved.get("min_pixels"),
        "max_pixels": max_pixels if max_pixels is not None else saved.get("max_pixels"),
        "max_image_tokens": max_image_tokens if max_image_tokens is not None else saved.get("max_image_tokens"),
    }
    output = Path(output)
    meta = {
        "model": str(Path(model).resolve()) if Path(model).exists() else model,
        "dataset": str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
        "split": split,
        **settings,
        "num_samples": num_samples,
        "greedy": greedy,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "backend": "vllm" if use_vllm else "transformers",
        "seed": seed,
    }
    _check_resume_metadata(output, meta)

    data = _select_split(load_driving_dataset(dataset, split=split), split)
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    done = _done_sample_ids(output)
    todo = [i for i, sid in enumerate(data["sample_id"]) if str(sid) not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(metadata_path(output), meta)
    if not todo:
        logger.info("All %d samples already in %s; nothing to generate.", len(data), output)
        return output
    if done:
        logger.info("Resuming: %d samples done, %d to go.", len(done), len(todo))

    generator = _VLLMGenerator if use_vllm else _TransformersGenerator
    runner = generator(model, settings, meta)
    from tqdm.auto import tqdm

    progress = tqdm(total=len(todo), desc="generate", unit="sample", disable=not show_progress)
    with open(output, "a") as f:
        for batch_indices in _chunks(todo, batch_size):
            rows = [data[i] for i in batch_indices]
            greedy_texts, sampled_texts = runner(rows)
            for row, greedy_text, samples in zip(rows, greedy_texts, sampled_texts):
                f.write(json.dumps(_prediction_record(row, greedy_text, samples)) + "\n")
            f.flush()
            progress.update(len(rows))
    progress.close()
    return output


def _check_resume_metadata(output: Path, meta: dict[str, Any]) -> None:
    """Refuse to append to a predictions file made with other settings (mixing them would corrupt the metrics)."""
    previous = metadata_path(output)
    if not output.is_file() or not previous.is_file():
        return
    with open(previous) as f:
        old = json.load(f)
    keys = ("model", "dataset", "split", "prompt_template", "num_samples", "greedy", "temperature", "max_new_tokens")
    changed = [k for k in keys if k in old and old[k] != meta[k]]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {meta[k]!r}" for k in changed)
        raise ValueError(
            f"{output} was generated with other settings ({details}); resuming would mix them. Use another --output "
            "or delete the file."
        )


def _prediction_record(row: dict[str, Any], greedy_text: str, samples: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sample_id": str(row["sample_id"]),
        "completion": greedy_text if greedy_text is not None else samples[0],
    }
    if len(samples) > 1:
        record["completions"] = samples
    record["speed_action"] = row["speed_action"]
    record["path_action"] = row["path_action"]
    if "feasible_actions" in row:
        record["feasible_actions"] = row["feasible_actions"]
    # Datasets store floats as float32: round so 15.6 is written 15.6, not 15.600000381469727.
    if row.get("trajectory") is not None:
        record["trajectory"] = [[round(float(v), 4) for v in point] for point in row["trajectory"]]
    if row.get("ego_speed") is not None:
        record["ego_speed"] = round(float(row["ego_speed"]), 4)
    return record


class _TransformersGenerator:
    """Batched `model.generate` with left padding (`modeling.generate_answers`' inputs); returns (greedy texts or
    Nones, per-row lists of K samples)."""

    def __init__(self, model_path: str, settings: dict[str, Any], meta: dict[str, Any]):
        import torch  # heavy: `score` and `compare` run without it

        from ..modeling import load_checkpoint

        checkpoint = load_checkpoint(model_path, image_budget=settings)
        self.model, self.processor, self.device = checkpoint.model, checkpoint.processor, checkpoint.device
        self.settings = settings
        self.meta = meta
        torch.manual_seed(meta["seed"])

    def _inputs(self, rows: list[dict[str, Any]]):
        from ..modeling import generation_example, generation_inputs

        template, max_images = self.settings["prompt_template"], self.settings["max_images"]
        examples = [generation_example(row, template, max_images) for row in rows]
        return generation_inputs(self.processor, examples, self.device)

    def _generate(self, inputs, **generation_kwargs) -> list[str]:
        from ..modeling import generate_from_inputs

        texts = generate_from_inputs(
            self.model, self.processor, inputs, max_new_tokens=self.meta["max_new_tokens"], **generation_kwargs
        )
        return [text.strip() for text in texts]

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[list[str | None], list[list[str]]]:
        inputs = self._inputs(rows)
        k = self.meta["num_samples"]
        greedy = self._generate(inputs, do_sample=False) if self.meta["greedy"] else [None] * len(rows)
        if k == 1 and self.meta["greedy"]:
            return greedy, [[] for _ in rows]
        # Checkpoints such as Qwen2-VL-Instruct ship top_k=1/top_p=0.001, which would make "sampling" greedy: set
        # the nucleus explicitly.
        sampled = self._generate(
            inputs,
            do_sample=True,
            temperature=self.meta["temperature"],
            top_p=self.meta["top_p"],
            top_k=self.meta["top_k"] or None,
            num_return_sequences=k,
        )
        return greedy, [sampled[i * k : (i + 1) * k] for i in range(len(rows))]


class _VLLMGenerator:
    """The same prompts through vLLM (`pip install 'alphadrive-trl[vllm]'`, GPU)."""

    def __init__(self, model_path: str, settings: dict[str, Any], meta: dict[str, Any]):
        from transformers import AutoProcessor
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(model_path)
        mm_kwargs = {k: settings[k] for k in ("min_pixels", "max_pixels") if settings[k] is not None}
        self.llm = LLM(
            model=model_path,
            seed=meta["seed"],
            limit_mm_per_prompt={"image": settings["max_images"] or 8},
            mm_processor_kwargs=mm_kwargs or None,
        )
        self.settings = settings
        self.meta = meta

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[list[str | None], list[list[str]]]:
        from vllm import SamplingParams

        from ..modeling import generation_example

        requests = []
        for row in rows:
            example = generation_example(row, self.settings["prompt_template"], self.settings["max_images"])
            text = self.processor.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)
            requests.append({"prompt": text, "multi_modal_data": {"image": example["images"]}})
        max_tokens = self.meta["max_new_tokens"]
        greedy: list[str | None] = [None] * len(rows)
        if self.meta["greedy"]:
            outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_tokens))
            greedy = [o.outputs[0].text.strip() for o in outputs]
        k = self.meta["num_samples"]
        if k == 1 and self.meta["greedy"]:
            return greedy, [[] for _ in rows]
        params = SamplingParams(
            n=k,
            temperature=self.meta["temperature"],
            top_p=self.meta["top_p"],
            top_k=self.meta["top_k"] or -1,
            max_tokens=max_tokens,
        )
        outputs = self.llm.generate(requests, params)
        return greedy, [[c.text.strip() for c in o.outputs] for o in outputs]
