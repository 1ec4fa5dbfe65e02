"""The driving policies besides the expert: `KeepPolicy`, `RandomPolicy`, `VLMPolicy` (a trained checkpoint), and
`load_policy` by name or checkpoint directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..actions import parse_answer_strict
from ..trajectory import derived_answer_words
from .base import Decision, DrivingContext, DrivingPolicy
from .expert import ExpertPolicy
from .scenarios import FALLBACK_META_ACTION, plan_to_meta_action


class KeepPolicy(DrivingPolicy):
    """Constant `KEEP, STRAIGHT` (`IDLE`): the baseline that shows what doing nothing costs."""

    name = "keep"

    def decide(self, context: DrivingContext) -> Decision:
        return Decision("IDLE", plan=("KEEP", "STRAIGHT"))


class RandomPolicy(DrivingPolicy):
    """A uniformly random available meta-action, seeded per episode."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._base_seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self._base_seed, seed])

    def decide(self, context: DrivingContext) -> Decision:
        action_type = context.env.action_type
        available = sorted(action_type.get_available_actions())
        return Decision(action_type.actions[int(self._rng.choice(available))])


def frame_roles(count: int) -> list[str]:
    """`image_roles` of the simulator frames: the current top-down frame, then earlier decisions (0.5 s apart).

    Example:
        >>> frame_roles(3)
        ['top_down', 'top_down_t-1', 'top_down_t-2']
    """
    return ["top_down"] + [f"top_down_t-{k}" for k in range(1, count)]


class VLMPolicy(DrivingPolicy):
    """A trained checkpoint driving from the rendered frames.

    At each decision the model gets the current top-down frame (plus `history_frames` earlier ones) and the prompt of
    the template saved with the checkpoint (`alphadrive_config.json`: template, image budget, max images), built by
    `prompts.build_prompt` exactly as in training; templates with `with_scene_facts` also get the scene in words, read
    from the simulator (`scene.scene_description`). It answers greedily; the plan maps to a meta-action through
    `plan_to_meta_action`. An answer that does not parse becomes `FALLBACK_META_ACTION` (`IDLE`: keep lane and target
    speed) and is counted as invalid.

    Checkpoints trained with the `trajectory` template drive from their waypoints: the plan is the meta-action pair
    the shared labeller (`labelling`, mode `labeller_mode`) derives from the predicted trajectory, the same rule
    that labels the data; without a usable trajectory the `<answer>` plan is used, and without either the answer is
    invalid.
    """

    needs_frames = True

    def __init__(
        self,
        model_dir: str,
        *,
        max_new_tokens: int = 96,
        history_frames: int | None = None,
        labeller_mode: str = "heading",
        device: str | None = None,
    ):
        import torch  # heavy: the baseline policies and the scenarios run without it

        from ..modeling import load_checkpoint
        from ..prompts import get_template

        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(f"No model checkpoint at {model_dir!r} (config.json not found)")
        checkpoint = load_checkpoint(model_dir, device=device)
        settings = checkpoint.config
        self.name = os.path.basename(os.path.normpath(model_dir)) or model_dir
        self.template = get_template(settings.get("prompt_template") or "default")
        self.max_images = settings.get("max_images")
        if history_frames is None:
            history_frames = (self.max_images - 1) if self.max_images else 0
        self.history_frames = max(0, int(history_frames))
        self.max_new_tokens = max_new_tokens
        self.labeller_mode = labeller_mode
        self._torch = torch
        self.model, self.processor, self.device = checkpoint.model, checkpoint.processor, checkpoint.device

    def reset(self, seed: int) -> None:
        self._torch.manual_seed(seed)

    def example(
        self, frames: Sequence[np.ndarray], ego_speed: float, navigation: str, scene_facts: str | None = None
    ) -> dict[str, Any]:
        """The generation example (`modeling.generation_example`) of one decision: the row a dataset built from
        these frames would hold, with the current frame and `history_frames` earlier ones. Before the history fills
        (the first decisions of an episode) the oldest frame stands in for the missing ones: the model always gets
        the image count it was trained with (with fewer images it gave no valid answer)."""
        from PIL import Image

        from ..modeling import generation_example

        frames = list(frames[: self.history_frames + 1])
        frames += frames[-1:] * (self.history_frames + 1 - len(frames))
        images = [Image.fromarray(np.asarray(frame)) for frame in frames]
        row = {"images": images, "image_roles": frame_roles(len(images)), "ego_speed": ego_speed,
               "navigation": navigation, "scene_facts": scene_facts}  # fmt: skip
        return generation_example(row, self.template, self.max_images)

    def generate(
        self, frames: Sequence[np.ndarray], ego_speed: float, navigation: str, scene_facts: str | None = None
    ) -> str:
        """The model's answer for one decision."""
        from ..modeling import generate_answers

        example = self.example(frames, ego_speed, navigation, scene_facts)
        return generate_answers(
            self.model,
            self.processor,
            [example],
            max_new_tokens=self.max_new_tokens,
            device=self.device,
            do_sample=False,
        )[0]

    def plan_from_text(self, text: str, ego_speed: float) -> tuple[str, str] | None:
        """The plan an answer states (trajectory checkpoints: the plan their waypoints imply), or `None`."""
        if self.template.with_trajectory:
            words = derived_answer_words(text, ego_speed, mode=self.labeller_mode)
            if len(words.speed) == 1 and len(words.path) == 1:
                return next(iter(words.speed)), next(iter(words.path))
        return parse_answer_strict(text)

    def scene_facts(self, context: DrivingContext) -> str | None:
        """The scene in words for templates that state it (`answer_only_facts`): read from the live simulator exactly
        as the data builder wrote the rows' `scene_facts`; None for every other template."""
        if not self.template.with_scene_facts:
            return None
        from .scene import scene_description, scene_state

        return scene_description(scene_state(context.env, context.scenario, context.navigation, context.ego_speed))

    def decide(self, context: DrivingContext) -> Decision:
        text = self.generate(context.frames, context.ego_speed, context.navigation, self.scene_facts(context))
        plan = self.plan_from_text(text, context.ego_speed)
        if plan is None:
            return Decision(FALLBACK_META_ACTION, text=text, valid=False)
        return Decision(plan_to_meta_action(*plan, lateral=context.scenario.lateral), plan=plan, text=text)


BASELINE_POLICIES: dict[str, Callable[[], DrivingPolicy]] = {
    "expert": lambda: ExpertPolicy(),
    "keep": lambda: KeepPolicy(),
    "random": lambda: RandomPolicy(),
}


def load_policy(spec: str, **vlm_options: Any) -> DrivingPolicy:
    """`expert`, `keep`, `random` or a checkpoint directory (`./expert` for a folder with a baseline's name)."""
    if spec in BASELINE_POLICIES:
        return BASELINE_POLICIES[spec]()
    if not os.path.isdir(spec):
        raise FileNotFoundError(
            f"checkpoint directory {spec} not found (baselines: {', '.join(BASELINE_POLICIES)}); train one first, "
            "e.g. `make pipeline`"
        )
    return VLMPolicy(spec, **vlm_options)
