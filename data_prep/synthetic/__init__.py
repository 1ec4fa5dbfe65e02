"""Procedural driving scenes with rule-based meta-action labels: the embedded default dataset (no download).

Each sample is a small front-camera picture of a road drawn with PIL (lanes in perspective, lead and adjacent cars,
traffic lights, stop lines, zebra crossings with pedestrians, junctions, cones closing a lane, speed-limit signs in the
hard preset), optional history frames (`front_t-1`, ...) and side cameras (`front_left`, `front_right`), an ego speed
and a navigation command. The label comes from explicit rules applied to the drawn scene *and* the text, so a model
needs both: the light colour and the distance to the stop line are in the picture, the speed and the turn direction
are in the prompt.

CLI:
    python -m data_prep.synthetic --output-dir data/synthetic --num-samples 1200 --seed 0
    python -m data_prep.synthetic --output-dir data/multi --num-samples 5000 --num-history-frames 1 \
        --cameras front,front_left,front_right --difficulty hard --preview multi.png

Modules: `rules` (scene types, `label_scene`), `expert` (expert trajectory), `describe` (captions), `sampling`
(difficulty presets, `sample_scene`), `rendering` (`render_view`, PNG), `build` (rows, `build_dataset`, card), `cli`.
`docs/data.md` describes the dataset schema.
"""

from .build import (
    GeneratorConfig,
    build_dataset,
    class_histogram,
    contact_sheet,
    dataset_card,
    generate_rows,
    generate_sample,
    histogram_table,
    rows_to_dataset,
)
from .cli import main
from .describe import describe_scene
from .expert import expert_trajectory
from .rendering import CAMERA_YAW_DEG, encode_png, render_view, scene_at
from .rules import (
    ALONGSIDE,
    DT,
    HORIZON,
    LANE_WIDTH,
    NAV_CHANGE,
    NAV_STRAIGHT,
    NAV_TURN,
    NAVIGATIONS,
    Decision,
    Scene,
    Vehicle,
    label_scene,
)
from .sampling import DIFFICULTIES, PRESETS, SPEED_LIMITS_KMH, DifficultyPreset, sample_scene

__all__ = [
    "ALONGSIDE",
    "CAMERA_YAW_DEG",
    "DIFFICULTIES",
    "DT",
    "HORIZON",
    "LANE_WIDTH",
    "NAVIGATIONS",
    "NAV_CHANGE",
    "NAV_STRAIGHT",
    "NAV_TURN",
    "PRESETS",
    "SPEED_LIMITS_KMH",
    "Decision",
    "DifficultyPreset",
    "GeneratorConfig",
    "Scene",
    "Vehicle",
    "build_dataset",
    "class_histogram",
    "contact_sheet",
    "dataset_card",
    "describe_scene",
    "encode_png",
    "expert_trajectory",
    "generate_rows",
    "generate_sample",
    "histogram_table",
    "label_scene",
    "main",
    "render_view",
    "rows_to_dataset",
    "sample_scene",
    "scene_at",
]
