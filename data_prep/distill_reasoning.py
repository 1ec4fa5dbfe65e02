"""Fill the `reasoning` column by asking a teacher VLM to explain the known decision (the SFT warm-up targets).

For every row without reasoning the teacher, behind any OpenAI-compatible chat endpoint (vLLM, SGLang,
`transformers serve`, a hosted API), gets the row's images as base64 data URLs plus the speed, navigation and the
ground-truth plan, and is asked to explain the decision in one or two sentences. Answers are appended to a JSONL
cache keyed by `sample_id` as they arrive, so an interrupted run resumes without asking again; requests run
`--concurrency` at a time, optionally under `--max-requests-per-second`, with `--timeout` per request and up to
`--max-retries` retries with exponential backoff on timeouts, connection errors, 429 and 5xx. With
`--fallback template` rows the teacher could not explain (or all rows, when no `--base-url` is given: fully offline)
get a templated explanation instead.

    OPENAI_API_KEY=... python -m data_prep.distill_reasoning --dataset data/nuscenes-mini \\
        --output-dir data/nuscenes-mini-reasoned --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct
    python -m data_prep.distill_reasoning --dataset data/nuscenes-mini --output-dir data/reasoned --fallback template
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alphadrive_trl.actions import plan_to_string
from alphadrive_trl.entrypoint import command

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are an experienced driving instructor who explains driving decisions briefly and concretely."
TEACHER_PROMPT = (
    "The image(s) show the view from the ego car ({roles}). The car drives at {speed:.1f} m/s and its navigation "
    "command is '{navigation}'. The decision for the next three seconds is '{plan}' (SPEED, PATH). "
    "In one or two sentences, explain why this decision is right, citing what you see in the scene (traffic, "
    "lights, road layout) and the navigation. Reply with the explanation only, without repeating the decision format."
)

_SPEED_PHRASES = {
    "KEEP": ("keep the current speed of {speed:.1f} m/s", "nothing ahead calls for a change of speed"),
    "ACCELERATE": ("speed up from {speed:.1f} m/s", "the road ahead is free enough to go faster"),
    "DECELERATE": ("slow down from {speed:.1f} m/s", "the situation ahead calls for a lower speed"),
    "STOP": ("come to a stop", "the scene ahead requires the car to stop"),
}
# What the templated reasoning says for each PATH action (data_prep.highway_scene uses the same words).
PATH_PHRASES = {
    "STRAIGHT": "stay in my lane",
    "LEFT_CHANGE": "change to the left lane",
    "RIGHT_CHANGE": "change to the right lane",
    "LEFT_TURN": "turn left",
    "RIGHT_TURN": "turn right",
}
_TAGS = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<answer>.*?</answer>", re.IGNORECASE | re.DOTALL)
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TeacherError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable status)."""


# --- prompts and templates --------------------------------------------------------------------------------------


def teacher_prompt(row: dict) -> str:
    """The question asked about one row (its decision is given; the teacher only explains it)."""
    return TEACHER_PROMPT.format(
        roles=", ".join(row.get("image_roles") or ["front"]),
        speed=float(row["ego_speed"]),
        navigation=row["navigation"],
        plan=plan_to_string(row["speed_action"], row["path_action"]),
    )


def template_reasoning(row: dict) -> str:
    """An offline explanation built from the row's fields only (it cannot cite the picture).

    Example:
        >>> template_reasoning({"ego_speed": 8.0, "navigation": "go straight", "speed_action": "DECELERATE",
        ...                     "path_action": "STRAIGHT"})
        'The navigation command is to go straight, so I stay in my lane. I slow down from 8.0 m/s because the situation ahead calls for a lower speed.'
    """
    speed_phrase, because = _SPEED_PHRASES[row["speed_action"]]
    navigation = str(row["navigation"]).strip().rstrip(".")
    navigation = f"to {navigation}" if navigation.lower().startswith(("go ", "turn ", "keep ")) else f"'{navigation}'"
    return (
        f"The navigation command is {navigation}, so I {PATH_PHRASES[row['path_action']]}. "
        f"I {speed_phrase.format(speed=float(row['ego_speed']))} because {because}."
    )


def clean_reasoning(text: Any) -> str:
    """The teacher's answer as one line of prose: tags, answer blocks and wrapping quotes removed.

    Example:
        >>> clean_reasoning('<think> "The light is red,\\n so I stop." </think> <answer> STOP, STRAIGHT </answer>')
        'The light is red, so I stop.'
    """
    if not isinstance(text, str):
        raise TeacherError(f"teacher returned no text (got {type(text).__name__})")
    cleaned = " ".join(_TAGS.sub(" ", _ANSWER_BLOCK.sub(" ", text)).split()).strip().strip("\"'").strip()
    if not cleaned:
        raise TeacherError("teacher returned an empty explanation")
    return cleaned


def image_to_data_url(image: Any, max_side: int | None = 1024) -> str:
    """A PIL image, `{"bytes", "path"}` dict or path as a base64 JPEG data URL (downscaled to `max_side`)."""
    import PIL.Image

    if isinstance(image, dict):
        image = PIL.Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else PIL.Image.open(image["path"])
    elif isinstance(image, (str, os.PathLike)):
        image = PIL.Image.open(image)
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_messages(row: dict, *, max_images: int | None = 1, max_side: int | None = 1024) -> list[dict]:
    """OpenAI chat messages for one row: the images (front first) then the question."""
    images = list(row["images"])[: max_images or None]
    content: list[dict] = [
        {"type": "image_url", "image_url": {"url": image_to_data_url(image, max_side)}} for image in images
    ]
    content.append({"type": "text", "text": teacher_prompt(row)})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


# --- the client -------------------------------------------------------------------------------------------------


class RateLimiter:
    """At most `per_second` request starts per second across threads (None: unlimited)."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


@dataclass
class ChatClient:
    """A minimal OpenAI-compatible `/chat/completions` client (standard library only) with retries and backoff."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubles each time (plus up to 10 % jitter)
    max_backoff: float = 60.0
    max_tokens: int = 160
    temperature: float = 0.2
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None))
    sleep: Callable[[float], None] = time.sleep

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # user-given endpoint
            return json.loads(response.read().decode("utf-8"))

    def complete(self, messages: list[dict]) -> str:
        """The assistant text for `messages`; raises `TeacherError` once retries are exhausted."""
        payload = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        last_error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                self.sleep(delay * (1 + 0.1 * random.random()))
            self.rate_limiter.wait()
            try:
                body = self._post(payload)
                return body["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as error:
                detail = error.read()[:300].decode("utf-8", "replace")
                last_error = f"HTTP {error.code}: {detail}"
                if error.code not in RETRYABLE_STATUS:
                    raise TeacherError(f"{self.url} answered {last_error} (not retried)") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except (ValueError, KeyError, IndexError, TypeError) as error:
                last_error = f"malformed response: {type(error).__name__}: {error}"
        raise TeacherError(f"{self.url} failed after {self.max_retries + 1} attempts; last error: {last_error}")


# --- cache ------------------------------------------------------------------------------------------------------


class ReasoningCache:
    """Teacher answers keyed by `sample_id`, appended to a JSONL file as they arrive (thread-safe).

    A line cut short by an interruption is ignored when the cache is read back.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                # An interrupted write left half a line: end it so the next answer starts on a line of its own.
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["sample_id"])] = str(entry["reasoning"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("ignoring an unreadable cache line in %s: %.80s", self.path, line)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.entries

    def get(self, sample_id: str) -> str | None:
        return self.entries.get(sample_id)

    def add(self, sample_id: str, reasoning: str, **extra: Any) -> None:
        line = json.dumps({"sample_id": sample_id, "reasoning": reasoning, **extra}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self.entries[sample_id] = reasoning


# --- distillation -----------------------------------------------------------------------------------------------


@dataclass
class DistillReport:
    already_had_reasoning: int = 0
    from_cache: int = 0
    asked: int = 0
    answered: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # sample_id -> reason
    templated: int = 0
    left_empty: int = 0

    def summary(self) -> str:
        lines = [
            f"reasoning: {self.already_had_reasoning} already present, {self.from_cache} from cache, "
            f"{self.answered}/{self.asked} answered by the teacher, {len(self.failed)} failed, "
            f"{self.templated} templated, {self.left_empty} left empty"
        ]
        lines += [f"  failed {sample_id}: {reason}" for sample_id, reason in list(self.failed.items())[:10]]
        return "\n".join(lines)


def _has_reasoning(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def ask_teacher(
    rows: Iterable[dict],
    client: ChatClient,
    cache: ReasoningCache,
    report: DistillReport,
    *,
    concurrency: int = 4,
    max_images: int | None = 1,
    max_side: int | None = 1024,
    total: int | None = None,
) -> None:
    """Ask for every row not yet cached, `concurrency` at a time; answers go to the cache, failures to the report.

    Rows are consumed lazily with at most `2 * concurrency` in flight, so images are never all in memory.
    """

    def explain(row: dict) -> str:
        return clean_reasoning(client.complete(build_messages(row, max_images=max_images, max_side=max_side)))

    in_flight: dict[Future, str] = {}
    progress = tqdm(total=total, desc="teacher", unit="row")

    def collect(done: Iterable[Future]) -> None:
        for future in done:
            sample_id = in_flight.pop(future)
            try:
                cache.add(sample_id, future.result(), model=client.model)
                report.answered += 1
            except Exception as error:  # one bad row must not stop the job; it is reported
                report.failed[sample_id] = f"{type(error).__name__}: {error}"
            progress.update(1)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for row in rows:
            report.asked += 1
            in_flight[pool.submit(explain, row)] = row["sample_id"]
            if len(in_flight) >= 2 * max(1, concurrency):
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                collect(done)
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            collect(done)
    progress.close()


def distill_dataset(
    dataset,
    cache: ReasoningCache,
    *,
    client: ChatClient | None = None,
    fallback: str = "none",
    concurrency: int = 4,
    max_images: int | None = 1,
    max_side: int | None = 1024,
):
    """Return `(dataset with reasoning filled, report)` for a `Dataset` or `DatasetDict` in the driving schema."""
    from datasets import DatasetDict, Image, List, Value

    if fallback not in ("none", "template"):
        raise ValueError(f"fallback must be 'none' or 'template', got {fallback!r}")
    if client is None and fallback != "template":
        raise ValueError("without a teacher (--base-url) the only way to fill reasoning is --fallback template")
    splits = dataset if isinstance(dataset, DatasetDict) else DatasetDict({"__single__": dataset})
    report = DistillReport()
    pending: list[tuple[str, int]] = []
    for name, part in splits.items():
        for index, (sample_id, reasoning) in enumerate(zip(part["sample_id"], part["reasoning"])):
            if _has_reasoning(reasoning):
                report.already_had_reasoning += 1
            elif sample_id in cache:
                report.from_cache += 1
            else:
                pending.append((name, index))
    if client is not None and pending:
        raw = {name: part.cast_column("images", List(Image(decode=False))) for name, part in splits.items()}
        rows = (raw[name][index] for name, index in pending)
        ask_teacher(
            rows, client, cache, report, concurrency=concurrency, max_images=max_images, max_side=max_side,
            total=len(pending),
        )  # fmt: skip

    def filled_column(part) -> list[str | None]:
        # Column access reads text only: images are never decoded here.
        columns = {key: part[key] for key in ("sample_id", "reasoning", *_TEMPLATE_FIELDS)}
        values = []
        for position, (sample_id, reasoning) in enumerate(zip(columns["sample_id"], columns["reasoning"])):
            if not _has_reasoning(reasoning):
                reasoning = cache.get(sample_id)
            if reasoning is None and fallback == "template":
                reasoning = template_reasoning({key: columns[key][position] for key in _TEMPLATE_FIELDS})
                report.templated += 1
            elif reasoning is None:
                report.left_empty += 1
            values.append(reasoning)
        return values

    result = DatasetDict()
    for name, part in splits.items():
        order = part.column_names
        values = filled_column(part)
        part = part.remove_columns("reasoning").add_column("reasoning", values, feature=Value("string"))
        result[name] = part.select_columns(order)
    return (result["__single__"] if "__single__" in result else result), report


_TEMPLATE_FIELDS = ("ego_speed", "navigation", "speed_action", "path_action")


# --- CLI --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.distill_reasoning",
        description=(
            "Fill the reasoning column of a driving dataset by asking a teacher VLM behind an OpenAI-compatible chat "
            "endpoint to explain each known decision in one or two sentences (resumable, cached by sample_id), or "
            "offline with --fallback template."
        ),
    )
    parser.add_argument("--dataset", required=True, help="input dataset (save_to_disk dir, parquet/JSONL file)")
    parser.add_argument("--output-dir", required=True, help="where to write the dataset with reasoning")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible API root, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", default=None, help="teacher model name as the endpoint knows it")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--max-requests-per-second", type=float, default=None, help="rate limit (default: none)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--max-retries", type=int, default=5, help="retries per row on timeouts, 429 and 5xx")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles)")
    parser.add_argument("--max-tokens", type=int, default=160, help="answer length limit")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--max-images", type=int, default=1, help="images per request, front first (0: all)")
    parser.add_argument("--max-image-side", type=int, default=1024, help="downscale images to this side (pixels)")
    parser.add_argument("--cache", default=None, help="JSONL cache of answers (default: <output-dir>.reasoning.jsonl)")
    parser.add_argument(
        "--fallback",
        choices=("none", "template"),
        default="none",
        help="template: fill rows the teacher could not explain with templated reasoning",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    return parser


@command("data_prep.distill_reasoning")
def main(argv: list[str] | None = None) -> int:
    from alphadrive_trl.data import load_driving_dataset
    from data_prep.common import atomic_directory

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:
        raise SystemExit(f"error: {output} already exists; pass --overwrite to replace it")
    client = None
    if args.base_url:
        if not args.model:
            raise SystemExit("error: --base-url needs --model")
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            logger.warning("$%s is not set: requests go without an API key", args.api_key_env)
        client = ChatClient(
            args.base_url, args.model, api_key=api_key, timeout=args.timeout, max_retries=args.max_retries,
            backoff=args.backoff, max_tokens=args.max_tokens, temperature=args.temperature,
            rate_limiter=RateLimiter(args.max_requests_per_second),
        )  # fmt: skip
    elif args.fallback != "template":
        raise SystemExit("error: give --base-url and --model for a teacher, or --fallback template to work offline")
    dataset = load_driving_dataset(args.dataset)
    cache = ReasoningCache(args.cache or output.parent / f"{output.name}.reasoning.jsonl")
    result, report = distill_dataset(
        dataset, cache, client=client, fallback=args.fallback, concurrency=args.concurrency,
        max_images=args.max_images or None, max_side=args.max_image_side,
    )  # fmt: skip
    logger.info(report.summary())
    with atomic_directory(output, overwrite=args.overwrite) as tmp:
        result.save_to_disk(str(tmp))
    logger.info("wrote %s (answers cached in %s)", output, cache.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
