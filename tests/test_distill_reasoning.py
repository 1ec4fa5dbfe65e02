"""Reasoning distillation against a real OpenAI-compatible HTTP server started by the test on 127.0.0.1."""

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from datasets import Dataset, load_from_disk
from PIL import Image

from alphadrive_trl.data import DRIVING_FEATURES, load_driving_dataset
from data_prep.distill_reasoning import (
    ChatClient,
    ReasoningCache,
    TeacherError,
    clean_reasoning,
    main,
    template_reasoning,
)

API_KEY = "test-key-123"
NAVIGATIONS = {
    "r0": ("go straight", "KEEP", "STRAIGHT"),
    "r1": ("turn left at the next intersection", "DECELERATE", "LEFT_TURN"),
    "r2": ("keep right", "ACCELERATE", "RIGHT_CHANGE"),
    "r3": ("go straight to the depot", "STOP", "STRAIGHT"),
    "r4": ("turn right", "KEEP", "RIGHT_TURN"),  # already has reasoning
    "r5": ("go straight for 200m", "KEEP", "LEFT_CHANGE"),
}


class FakeTeacher:
    """An OpenAI-compatible /v1/chat/completions endpoint. `script[navigation]` lists what successive requests for
    that row get: "ok", an HTTP status code (int) or "slow" (answers after `slow_seconds`)."""

    def __init__(self, script=None, slow_seconds=1.0):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.slow_seconds = slow_seconds
        self.requests = []  # (navigation, number of images, image size, authorization)
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions"
                user = body["messages"][-1]["content"]
                if isinstance(user, str):
                    user = [{"type": "text", "text": user}]
                text = next(part["text"] for part in user if part["type"] == "text")
                navigation = re.search(r"navigation command is '(.*?)'", text).group(1)
                plan = re.search(r"decision for the next three seconds is '(.*?)'", text)
                plan = plan.group(1) if plan else "?"
                images = [part["image_url"]["url"] for part in user if part["type"] == "image_url"]
                size = None
                if images:
                    assert images[0].startswith("data:image/jpeg;base64,")
                    size = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1]))).size
                with teacher.lock:
                    teacher.requests.append((navigation, len(images), size, self.headers.get("Authorization")))
                    steps = teacher.script.get(navigation, [])
                    action = steps.pop(0) if steps else "ok"
                if action == "slow":
                    time.sleep(teacher.slow_seconds)
                elif action != "ok":
                    self.send_response(action)
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted failure"}')
                    return
                answer = {"choices": [{"message": {"role": "assistant", "content": f'"{navigation}: {plan}."'}}]}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:
                    pass  # the client gave up waiting (the timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def asked(self):
        return sorted(navigation for navigation, *_ in self.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dataset_dir(tmp_path):
    rows = []
    for sample_id, (navigation, speed, path) in NAVIGATIONS.items():
        image = tmp_path / f"{sample_id}.png"
        Image.new("RGB", (64, 32), (40, 120, 40)).save(image)
        rows.append(
            {"sample_id": sample_id, "images": [str(image), str(image)], "image_roles": ["front", "front_t-1"],
             "ego_speed": 5.0, "navigation": navigation, "speed_action": speed, "path_action": path,
             "reasoning": "Given by hand." if sample_id == "r4" else None, "feasible_actions": None,
             "trajectory": None, "source": "test"}
        )  # fmt: skip
    Dataset.from_list(rows, features=DRIVING_FEATURES).save_to_disk(str(tmp_path / "in"))
    return tmp_path / "in"


def _args(dataset_dir, output, teacher, *extra):
    return ["--dataset", str(dataset_dir), "--output-dir", str(output), "--base-url", teacher.base_url,
            "--model", "teacher", "--api-key-env", "TEST_TEACHER_KEY", "--backoff", "0.01", "--concurrency", "2",
            *extra]  # fmt: skip


def _reasoning(output):
    dataset = load_from_disk(str(output))["train"]
    return dict(zip(dataset["sample_id"], dataset["reasoning"]))


def test_retries_timeouts_and_template_fallback(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", API_KEY)
    script = {
        "turn left at the next intersection": [503, "ok"],  # retried
        "keep right": [429, 502, "ok"],  # retried twice
        "go straight to the depot": [400],  # not retryable: fails, then templated
        "go straight for 200m": ["slow", "ok"],  # times out once
    }
    output = tmp_path / "out"
    with FakeTeacher(script, slow_seconds=1.5) as teacher:
        assert main(_args(dataset_dir, output, teacher, "--timeout", "0.5", "--fallback", "template")) == 0
    reasoning = _reasoning(output)
    assert reasoning == {
        "r0": "go straight: KEEP, STRAIGHT.",
        "r1": "turn left at the next intersection: DECELERATE, LEFT_TURN.",
        "r2": "keep right: ACCELERATE, RIGHT_CHANGE.",
        "r3": template_reasoning(
            {
                "ego_speed": 5.0,
                "navigation": "go straight to the depot",
                "speed_action": "STOP",
                "path_action": "STRAIGHT",
            }
        ),  # fmt: skip
        "r4": "Given by hand.",
        "r5": "go straight for 200m: KEEP, LEFT_CHANGE.",
    }
    # r4 is never asked; failures are retried, the 400 is not.
    assert teacher.asked() == sorted(
        ["go straight"] + ["turn left at the next intersection"] * 2 + ["keep right"] * 3
        + ["go straight to the depot"] + ["go straight for 200m"] * 2
    )  # fmt: skip
    # One image by default (--max-images 1), sent as a decodable JPEG of the original size, with the key.
    assert {(n_images, size, auth) for _, n_images, size, auth in teacher.requests} == {
        (1, (64, 32), f"Bearer {API_KEY}")
    }
    cached = [json.loads(line) for line in (tmp_path / "out.reasoning.jsonl").read_text().splitlines()]
    assert sorted(entry["sample_id"] for entry in cached) == ["r0", "r1", "r2", "r5"]
    assert {entry["model"] for entry in cached} == {"teacher"}
    # The output keeps the schema and the images.
    dataset = load_driving_dataset(str(output), split="train")
    assert dataset.features == DRIVING_FEATURES
    assert dataset[0]["images"][0].size == (64, 32)


def test_interrupted_run_resumes_from_the_cache(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", API_KEY)
    output = tmp_path / "out"
    # First run: r1's endpoint keeps failing, no fallback -> r1 stays empty, the rest is cached.
    with FakeTeacher({"turn left at the next intersection": [503, 503]}) as teacher:
        main(_args(dataset_dir, output, teacher, "--max-retries", "1"))
    assert _reasoning(output)["r1"] is None
    assert len(teacher.requests) == 2 + 4  # r1 twice, r0 r2 r3 r5 once
    # An interruption can leave a half-written last line: it is ignored.
    cache_file = tmp_path / "out.reasoning.jsonl"
    with cache_file.open("a") as handle:
        handle.write('{"sample_id": "r1", "reas')
    # Second run asks only for r1, at most 3 images now.
    with FakeTeacher() as teacher:
        main(_args(dataset_dir, output, teacher, "--overwrite", "--max-images", "0"))
    assert teacher.asked() == ["turn left at the next intersection"]
    assert teacher.requests[0][1] == 2  # both images of the row
    reasoning = _reasoning(output)
    assert reasoning["r1"] == "turn left at the next intersection: DECELERATE, LEFT_TURN."
    assert reasoning["r0"] == "go straight: KEEP, STRAIGHT."
    assert "r1" in ReasoningCache(cache_file)
    assert len(cache_file.read_text().splitlines()) == 6  # 5 answers + the broken line
    # An existing output is not replaced without --overwrite.
    with FakeTeacher() as teacher, pytest.raises(SystemExit, match="--overwrite"):
        main(_args(dataset_dir, output, teacher))


def test_offline_template_mode(dataset_dir, tmp_path):
    output = tmp_path / "offline"
    assert main(["--dataset", str(dataset_dir), "--output-dir", str(output), "--fallback", "template"]) == 0
    reasoning = _reasoning(output)
    assert reasoning["r4"] == "Given by hand."
    assert reasoning["r1"] == (
        "The navigation command is to turn left at the next intersection, so I turn left. "
        "I slow down from 5.0 m/s because the situation ahead calls for a lower speed."
    )
    assert reasoning["r3"].startswith("The navigation command is to go straight to the depot, so I stay in my lane.")
    with pytest.raises(SystemExit, match="--fallback template to work offline"):
        main(["--dataset", str(dataset_dir), "--output-dir", str(tmp_path / "x")])


def test_client_errors_and_cleaning():
    with FakeTeacher({"go straight": [404]}) as teacher:
        client = ChatClient(teacher.base_url, "teacher", backoff=0.0, max_retries=3)
        with pytest.raises(TeacherError, match="HTTP 404.*not retried"):
            client.complete([{"role": "user", "content": "the navigation command is 'go straight'"}])
    # Nothing listens on this port any more: connection errors are retried, then reported.
    client = ChatClient(teacher.base_url, "teacher", backoff=0.0, max_retries=1, timeout=0.5)
    with pytest.raises(TeacherError, match="failed after 2 attempts"):
        client.complete([{"role": "user", "content": "hi"}])
    assert clean_reasoning("<think> It is clear. </think>\n<answer> KEEP, STRAIGHT </answer>") == "It is clear."
    with pytest.raises(TeacherError, match="empty explanation"):
        clean_reasoning(" <answer> KEEP, STRAIGHT </answer> ")
    with pytest.raises(TeacherError, match="no text"):
        clean_reasoning(None)
