"""Prompt templates: a dataset row -> TRL's conversational `prompt` (and, for SFT, `completion`).

Training, GRPO and evaluation all build prompts here, from the template name stored with the checkpoint, so the
model always sees the same layout: the image placeholders first (`{"type": "image"}`, front camera first, in
`image_roles` order), then one short text part with the ego speed, the navigation command, which image is which (when
there are several), both vocabularies and the answer format. The wording is short on purpose: tiny demo models train
on CPU, and every prompt token costs time.

Example:
    >>> row = {"images": ["<img>"], "image_roles": ["front"], "ego_speed": 8.3, "navigation": "go straight",
    ...        "speed_action": "KEEP", "path_action": "STRAIGHT", "reasoning": "Clear road."}
    >>> build_prompt(row)[0]["content"][0]
    {'type': 'image'}
    >>> print(build_prompt(row)[0]["content"][1]["text"])  # doctest: +NORMALIZE_WHITESPACE
    Speed 8.3 m/s. Navigation: go straight. Plan the next 3 s. SPEED: KEEP, ACCELERATE, DECELERATE, STOP. PATH:
    STRAIGHT, RIGHT_CHANGE, LEFT_CHANGE, RIGHT_TURN, LEFT_TURN. Reply <think> reasoning </think> <answer> SPEED,
    PATH </answer>.
    >>> build_completion(row)[0]["content"][0]["text"]
    '<think> Clear road. </think> <answer> KEEP, STRAIGHT </answer>'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .actions import PATH_ACTIONS, SPEED_ACTIONS, format_answer
from .data import DrivingDataError, image_order

_HISTORY_ROLE = re.compile(r"^(?P<camera>.+)_t-(?P<steps>\d+)$")
_CAMERA_NAMES = {
    "front": "front camera",
    "front_left": "front-left camera",
    "front_right": "front-right camera",
    "back": "rear camera",
    "back_left": "rear-left camera",
    "back_right": "rear-right camera",
}


def describe_role(role: str) -> str:
    """Readable name of an image role: `front_t-2` -> `front camera 2 frames earlier`.

    Example:
        >>> describe_role("front_t-1"), describe_role("front_right")
        ('front camera 1 frame earlier', 'front-right camera')
    """
    match = _HISTORY_ROLE.match(role)
    if match:
        steps = int(match["steps"])
        camera = _CAMERA_NAMES.get(match["camera"], match["camera"].replace("_", " "))
        return f"{camera} {steps} frame{'s' if steps != 1 else ''} earlier"
    return _CAMERA_NAMES.get(role, role.replace("_", " "))


@dataclass(frozen=True)
class PromptTemplate:
    """How a row becomes text. `instruction` follows the speed/navigation/images sentence; `answer_format` states the
    tag format. `target` is what the SFT completion holds: `plan` (`<think> reasoning </think> <answer> S, P
    </answer>`), `answer` (the answer block only: no reasoning even where the row has some) or `caption` (the row's
    `caption` column: perception pre-training, no plan); `with_trajectory` appends the expert trajectory to SFT
    targets (trajectory mode); `with_scene_facts` states the row's `scene_facts` (the scene in words, e.g. from the
    simulator's state) after the navigation command: privileged perception, to tell perception errors from decision
    errors."""

    name: str
    instruction: str
    answer_format: str
    with_trajectory: bool = False
    target: str = "plan"
    with_scene_facts: bool = False

    def text(self, row: Mapping[str, Any], roles: list[str]) -> str:
        parts = [f"Speed {float(row['ego_speed']):.1f} m/s.", f"Navigation: {str(row['navigation']).strip()}."]
        if self.with_scene_facts:
            facts = row.get("scene_facts")
            if not isinstance(facts, str) or not facts.strip():
                raise DrivingDataError(
                    f"sample_id={row.get('sample_id')} field=scene_facts: template {self.name!r} states the scene "
                    "in words, but the row has none (`python -m data_prep.highway_env` writes them)"
                )
            parts.append(f"Scene: {facts.strip()}")
        if len(roles) > 1:
            parts.append(f"Images in order: {', '.join(describe_role(role) for role in roles)}.")
        parts.append(self.instruction)
        if self.answer_format:
            parts.append(self.answer_format)
        return " ".join(parts)


_VOCABULARIES = f"SPEED: {', '.join(SPEED_ACTIONS)}. PATH: {', '.join(PATH_ACTIONS)}."

PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    "default": PromptTemplate(
        name="default",
        instruction=f"Plan the next 3 s. {_VOCABULARIES}",
        answer_format="Reply <think> reasoning </think> <answer> SPEED, PATH </answer>.",
    ),
    "trajectory": PromptTemplate(
        name="trajectory",
        instruction=f"Plan the next 3 s. {_VOCABULARIES} Also give 6 waypoints [x,y] at 0.5 s steps (metres, x "
        "forward, y left).",
        answer_format="Reply <think> reasoning </think> <answer> SPEED, PATH </answer> <trajectory> [x,y] ... "
        "</trajectory>.",
        with_trajectory=True,
    ),
    # The answer block alone: the policy gradient of GRPO then lands on the decision tokens only.
    "answer_only": PromptTemplate(
        name="answer_only",
        instruction=f"Plan the next 3 s. {_VOCABULARIES}",
        answer_format="Reply <answer> SPEED, PATH </answer>.",
        target="answer",
    ),
    # The scene's facts in words in the prompt (`scene_facts`, highway-env rows): what the policy would plan if it
    # perceived perfectly, to tell perception errors from decision errors (`make sim-demo-facts`).
    "answer_only_facts": PromptTemplate(
        name="answer_only_facts",
        instruction=f"Plan the next 3 s. {_VOCABULARIES}",
        answer_format="Reply <answer> SPEED, PATH </answer>.",
        target="answer",
        with_scene_facts=True,
    ),
    # Perception pre-training (`make base-model`): describe the scene; the target is the row's `caption`.
    "describe": PromptTemplate(
        name="describe",
        instruction="Describe what matters in the scene.",
        answer_format="",
        target="caption",
    ),
}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """Look a template up by name (a `PromptTemplate` passes through); unknown names list the valid ones."""
    if isinstance(template, PromptTemplate):
        return template
    try:
        return PROMPT_TEMPLATES[template]
    except KeyError:
        raise ValueError(
            f"Unknown prompt template {template!r}; choose one of {', '.join(PROMPT_TEMPLATES)}"
        ) from None


def build_prompt(
    row: Mapping[str, Any], template: str | PromptTemplate = "default", *, max_images: int | None = None
) -> list[dict[str, Any]]:
    """One user message: an image placeholder per image (front first, `image_roles` order), then the text part."""
    spec = get_template(template)
    order = image_order(row, max_images)
    roles = [row["image_roles"][i] for i in order]
    content: list[dict[str, Any]] = [{"type": "image"} for _ in order]
    content.append({"type": "text", "text": spec.text(row, roles)})
    return [{"role": "user", "content": content}]


def completion_text(row: Mapping[str, Any], template: str | PromptTemplate = "default") -> str:
    """The SFT target: `<think> reasoning </think> <answer> S, P </answer>` (answer only without reasoning, or with the
    `answer_only` template), plus the `<trajectory>` block in trajectory mode; the `caption` column for `describe`."""
    spec = get_template(template)
    if spec.target == "caption":
        caption = row.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise DrivingDataError(
                f"sample_id={row.get('sample_id')} field=caption: template {spec.name!r} trains on scene captions, "
                "but the row has none (build the data with `python -m data_prep.synthetic --captions`)"
            )
        return caption.strip()
    reasoning = row.get("reasoning") if spec.target == "plan" else None
    text = format_answer(row["speed_action"], row["path_action"], reasoning)
    if spec.with_trajectory:
        if row.get("trajectory") is None:
            raise DrivingDataError(
                f"sample_id={row.get('sample_id')} field=trajectory: template {spec.name!r} needs an expert "
                "trajectory, but the row has none"
            )
        from .trajectory import format_trajectory  # imported lazily: only trajectory mode needs it

        text = f"{text} {format_trajectory(row['trajectory'])}"
    return text


def build_completion(row: Mapping[str, Any], template: str | PromptTemplate = "default") -> list[dict[str, Any]]:
    """One assistant message holding `completion_text(row, template)`."""
    return [{"role": "assistant", "content": [{"type": "text", "text": completion_text(row, template)}]}]


def to_sft_example(
    row: Mapping[str, Any], template: str | PromptTemplate = "default", max_images: int | None = None
) -> dict[str, Any]:
    """`{"images", "prompt", "completion"}`: the prompt-completion form TRL's VLM `SFTTrainer` trains on (loss on
    the completion only)."""
    order = image_order(row, max_images)
    return {
        "images": [row["images"][i] for i in order],
        "prompt": build_prompt(row, template, max_images=max_images),
        "completion": build_completion(row, template),
    }


def to_grpo_example(
    row: Mapping[str, Any], template: str | PromptTemplate = "default", max_images: int | None = None
) -> dict[str, Any]:
    """`{"images", "prompt", ...}`: the conversational prompt for `GRPOTrainer`; every other column (speed_action,
    path_action, feasible_actions, trajectory, ego_speed, ...) is kept, since TRL passes them to the rewards."""
    order = image_order(row, max_images)
    example = {key: value for key, value in row.items() if key not in ("completion", "messages")}
    example["images"] = [row["images"][i] for i in order]
    example["image_roles"] = [row["image_roles"][i] for i in order]
    example["prompt"] = build_prompt(row, template, max_images=max_images)
    return example
