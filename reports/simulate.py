"""Simulated traffic: rows drawn from the served version's own training data, sent to a running
Lifecycle API, optionally shifted per feature, optionally followed by feedback at a chosen
accuracy. The reference deployment's "random Iris-like vectors every 30 minutes", grown up:
the rows have the model's own features and distribution, whatever the model, so a drift or
quality report over them has a known answer (docs/simulate.md).

The API is reached over HTTP only, as any client would: this module knows the served model
from `GET /model` and its data from the tracking server, never from the serving code.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd

from lifecycle.core import mlflow_gateway
from lifecycle.core.errors import ConfigError, LifecycleError
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import Settings
from reports.reference import training_rows

Via = Literal["rest", "async"]
VIAS: tuple[Via, ...] = ("rest", "async")
# Seconds between two polls of a pending async task: short against a worker's latency,
# long enough that polling is not most of the API's load.
POLL_INTERVAL = 0.05
_SHIFT = re.compile(r"\s*([+\-*])\s*([^\s].*?)\s*")


class ApiError(LifecycleError):
    """The API is unreachable, or answered with an error: one line saying which."""

    status_code = 502


@dataclass(frozen=True)
class Shift:
    """`feature` moved by `amount`: added (`+x`, `-x`) or multiplied (`*x`)."""

    feature: str
    op: Literal["+", "*"]
    amount: float

    def apply(self, values: pd.Series) -> pd.Series:
        return values + self.amount if self.op == "+" else values * self.amount


@dataclass(frozen=True)
class SimulationRequest:
    api_url: str
    count: int
    seed: int
    via: Via = "rest"
    batch_size: int = 1
    rate: float = 0.0  # rows per second; 0: as fast as the API answers
    shifts: tuple[str, ...] = ()  # "FEATURE=+X", "FEATURE=-X" or "FEATURE=*X"
    feedback_accuracy: float | None = None
    # Feedback with each drawn row's own training label: ground truth, which a shift does not
    # change, so a shifted feature that fools the model shows as lower accuracy.
    feedback_truth: bool = False
    timeout: float = 30.0  # seconds for one HTTP answer, and for each async task's result
    # Write the rows to this CSV or Parquet file instead of sending them (e.g. into the
    # batch_scoring DAG's inbox).
    out: Path | None = None

    def check(self) -> None:
        """Refuse what no API call could make sense of, before any is made."""
        if self.count < 1:
            raise ConfigError(f"--count: expected at least 1 row, got {self.count}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size: expected at least 1, got {self.batch_size}")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ConfigError(f"--rate: expected rows per second >= 0, got {self.rate}")
        if self.via not in VIAS:
            raise ConfigError(f"--via: expected one of {', '.join(VIAS)}, got '{self.via}'")
        p = self.feedback_accuracy
        if p is not None and not 0.0 <= p <= 1.0:
            raise ConfigError(f"--feedback-accuracy: expected a number in [0, 1], got {p}")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout: expected seconds > 0, got {self.timeout}")
        if self.out is not None:
            if self.out.suffix.lower() not in (".csv", ".parquet"):
                raise ConfigError(f"--out: expected a .csv or .parquet file, got '{self.out}'")
            if self.feedback_accuracy is not None or self.feedback_truth:
                raise ConfigError("--out: rows written to a file get no answers, so no feedback")
        if self.feedback_truth and self.feedback_accuracy is not None:
            raise ConfigError("--feedback-truth: give it or --feedback-accuracy, not both")


@dataclass(frozen=True)
class Served:
    """The version `GET /model` named, with its schema and training rows."""

    name: str
    version: str
    run_id: str
    schema: FeatureSchema
    rows: pd.DataFrame  # the schema's features, typed by FeatureSchema.coerce
    truth: tuple[str, ...] = ()  # each row's class label, as the API names it


@dataclass
class SimulationResult:
    model_name: str
    version: str  # the version GET /model named before the first row
    tag: str  # every request id of the run starts with "sim-<tag>-"
    sent: int = 0  # rows sent
    answered: int = 0  # rows that came back with a prediction
    feedback_sent: int = 0
    feedback_correct: int = 0  # feedback that agreed with the prediction
    elapsed: float = 0.0
    written: Path | None = None  # --out: the file the rows went to, none sent
    request_ids: list[str] = field(default_factory=list)  # one per answered row, in order
    versions: Counter[str] = field(default_factory=Counter)  # rows answered per version

    @property
    def rows_per_second(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        if self.written is not None:
            return (
                f"wrote {self.sent} rows to {self.written} "
                f"({self.model_name} version {self.version}'s training rows)"
            )
        line = (
            f"sent {self.sent} rows, answered {self.answered}, feedback {self.feedback_sent}, "
            f"{self.model_name} version {self.version}, {self.elapsed:.1f}s, "
            f"{self.rows_per_second:.1f} rows/s"
        )
        others = sorted(v for v in self.versions if v != self.version)
        if others:  # a promotion during the run: say who answered what
            line += " (answered by " + ", ".join(
                f"v{v}: {n}" for v, n in sorted(self.versions.items())
            )
            line += ")"
        return line


# -- shifts ------------------------------------------------------------------------------


def parse_shift(text: str) -> tuple[str, Literal["+", "*"], float]:
    """`FEATURE=+X`, `FEATURE=-X` or `FEATURE=*X` → (feature, "+" or "*", amount); `-X` is
    `+(-X)`. The last `=` splits, since no expression holds one and a name might."""
    name, sep, expression = text.rpartition("=")
    match = _SHIFT.fullmatch(expression)
    amount = _number(match.group(2)) if match else None
    if not sep or not name.strip() or match is None or amount is None:
        raise ConfigError(
            f"--shift '{text}': expected FEATURE=+X, FEATURE=-X or FEATURE=*X "
            "(X a finite number), e.g. 'petal length (cm)=+1.5'"
        )
    op = match.group(1)
    if op == "*":
        return name.strip(), "*", amount
    return name.strip(), "+", amount if op == "+" else -amount


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def resolve_shifts(texts: Sequence[str], schema: FeatureSchema) -> list[Shift]:
    """Each `--shift` checked against the model's schema: a known, numeric feature."""
    kinds = {f.name: f.kind for f in schema.features}
    shifts = []
    for text in texts:
        name, op, amount = parse_shift(text)
        if name not in kinds:
            raise ConfigError(
                f"--shift '{text}': the model has no feature '{name}' "
                f"(features: {', '.join(schema.names)})"
            )
        if kinds[name] != "numeric":
            raise ConfigError(
                f"--shift '{text}': feature '{name}' is {kinds[name]}; only numeric ones shift"
            )
        shifts.append(Shift(name, op, amount))
    return shifts


# -- rows --------------------------------------------------------------------------------


def draw(
    served: Served, count: int, shifts: Sequence[Shift], rng: np.random.Generator
) -> tuple[list[list[Any]], list[str]]:
    """`count` training rows drawn with replacement, shifted, in schema order as JSON values
    (a missing value is null: JSON has no NaN), and each one's label (none when the served
    version has no truth)."""
    picks = rng.integers(0, len(served.rows), size=count)
    frame = served.rows.iloc[picks].reset_index(drop=True)
    for shift in shifts:
        frame[shift.feature] = shift.apply(frame[shift.feature])
    rows = [[_json_value(v) for v in row] for row in frame[served.schema.names].itertuples(False)]
    return rows, [served.truth[i] for i in picks] if served.truth else []


def draw_rows(
    served: Served, count: int, shifts: Sequence[Shift], rng: np.random.Generator
) -> list[list[Any]]:
    return draw(served, count, shifts, rng)[0]


def write_rows(rows: list[list[Any]], names: Sequence[str], out: Path) -> Path:
    """The rows as a CSV or Parquet file (by suffix), which appears whole: a reader of the
    folder (the batch_scoring DAG) never sees it half written."""
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    frame = pd.DataFrame(rows, columns=list(names))
    if out.suffix.lower() == ".parquet":
        frame.to_parquet(partial, index=False)
    else:
        frame.to_csv(partial, index=False)
    os.replace(partial, out)
    return out


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def batches(rows: list[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def feedback_label(
    predicted: str, labels: Sequence[str], accuracy: float, rng: np.random.Generator
) -> str:
    """The predicted label with probability `accuracy`, else another class chosen at random:
    the feedback states the accuracy, so the measured accuracy is `accuracy` within sampling
    error whatever the model's real one (a model with one class can only be right)."""
    others = [label for label in labels if label != predicted]
    if not others or rng.random() < accuracy:
        return predicted
    return others[int(rng.integers(0, len(others)))]


class Pacer:
    """Holds the send loop to `rate` rows per second by sleeping until each batch is due:
    row k is due at start + k / rate, so a slow answer is caught up, not added to."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._start = time.monotonic()

    def wait(self, rows_sent: int) -> None:
        if self._rate <= 0:
            return
        delay = self._start + rows_sent / self._rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# -- the API -----------------------------------------------------------------------------


class ApiClient:
    """The few calls the simulation makes, over one keep-alive connection; every failure is
    an ApiError of one line."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        headers = {"X-Request-Id": request_id} if request_id else None
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ApiError(f"API at {self.url} did not answer {method} {path} in time") from None
        except httpx.TransportError as exc:
            raise ApiError(f"API unreachable at {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ApiError(
                f"API answered {method} {path} with {response.status_code}: "
                f"{answer_detail(response)}"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(f"API answered {method} {path} with something other than an object")
        return answer


def answer_detail(response: httpx.Response) -> str:
    """The API's one-line `detail`, or the start of whatever else came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    text = str(detail) if detail is not None else response.text or response.reason_phrase
    return " ".join(text.split())[:300]


def served_version(api: ApiClient) -> tuple[str, str, str]:
    """(name, version, run id) of the version the API serves now."""
    model = api.call("GET", "/model")
    name, version, run_id = model.get("name"), model.get("version"), model.get("run_id")
    if not (name and version):
        raise ApiError(f"API at {api.url}: GET /model named no model")
    if not run_id:
        raise ApiError(
            f"{name} version {version} has no run id: no training rows to draw traffic from"
        )
    return str(name), str(version), str(run_id)


def served_schema(settings: Settings, name: str, version: str) -> FeatureSchema:
    """The feature schema the served version carries, from the tracking server."""
    mlflow_gateway.connect(settings)
    return FeatureSchema.from_metadata(mlflow_gateway.model_metadata(f"models:/{name}/{version}"))


def served_rows(
    schema: FeatureSchema, name: str, version: str, run_id: str
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The version's training rows, its schema's features typed by FeatureSchema.coerce, and
    each row's class label as the API names it (empty without a target column)."""
    rows = training_rows(run_id)
    missing = [n for n in schema.names if n not in rows.columns]
    if missing or rows.empty:
        raise ConfigError(f"{name} version {version}: its training rows lack {missing or 'rows'}")
    truth: tuple[str, ...] = ()
    if schema.target in rows.columns and schema.class_labels:
        pairs = zip(schema.classes, schema.class_labels, strict=True)
        names = {str(value): label for value, label in pairs}
        truth = tuple(names.get(str(v), str(v)) for v in rows[schema.target])
    return schema.coerce(rows).reset_index(drop=True), truth


# -- the run -----------------------------------------------------------------------------


class Simulation:
    """One run: sends the batches and, per answered row, the feedback."""

    def __init__(
        self,
        api: ApiClient,
        request: SimulationRequest,
        served: Served,
        result: SimulationResult,
        feedback_rng: np.random.Generator,
        truth: Sequence[str] = (),
    ) -> None:
        self.api = api
        self.truth = truth
        self.request = request
        self.served = served
        self.result = result
        self._feedback_rng = feedback_rng
        self._pending: list[str] = []  # async task ids, oldest first

    def run(self, rows: list[list[Any]]) -> None:
        pacer = Pacer(self.request.rate)
        for index, batch in enumerate(batches(rows, self.request.batch_size)):
            pacer.wait(self.result.sent)
            request_id = f"sim-{self.result.tag}-{index}"
            if self.request.via == "rest":
                self._answered(self.api.call("POST", "/predict", {"instances": batch}, request_id))
            else:
                accepted = self.api.call("POST", "/predict/async", {"instances": batch}, request_id)
                self._pending.append(str(accepted.get("task_id", request_id)))
                self._collect(wait=False)
            self.result.sent += len(batch)
        self._collect(wait=True)

    def _collect(self, wait: bool) -> None:
        """Results of the pending tasks, oldest first, up to the first not done (the worker
        takes them roughly in order, so that costs about one poll per send). With `wait`,
        until none is pending, or a task outlasts the timeout."""
        deadline = time.monotonic() + self.request.timeout
        while self._pending:
            task_id = self._pending[0]
            status = self.api.call("GET", f"/tasks/{task_id}")
            state = status.get("status")
            if state == "success":
                self._pending.pop(0)
                self._answered(status.get("result") or {})
                deadline = time.monotonic() + self.request.timeout
            elif state == "failure":
                raise ApiError(f"task {task_id} failed: {status.get('error')}")
            elif not wait:
                return
            elif time.monotonic() >= deadline:
                raise ApiError(
                    f"task {task_id} not done after {self.request.timeout:g}s ({state}): "
                    "is a worker running?"
                )
            else:
                time.sleep(POLL_INTERVAL)

    def _answered(self, answer: Mapping[str, Any]) -> None:
        """Count an answer's rows (the /predict batch shape) and send their feedback."""
        predictions = answer.get("predictions")
        version = str((answer.get("model") or {}).get("version", self.result.version))
        if not isinstance(predictions, list):
            raise ApiError(f"API answer without predictions: {str(answer)[:200]}")
        for item in predictions:
            request_id, label = str(item["request_id"]), str(item["label"])
            row = self.result.answered  # rows are answered in the order they were sent
            self.result.answered += 1
            self.result.request_ids.append(request_id)
            self.result.versions[version] += 1
            self._feedback(request_id, label, row)

    def _feedback(self, request_id: str, predicted: str, row: int) -> None:
        accuracy = self.request.feedback_accuracy
        if self.request.feedback_truth:
            label = self.truth[row]
        elif accuracy is None:
            return
        else:
            labels = self.served.schema.class_labels
            label = feedback_label(predicted, labels, accuracy, self._feedback_rng)
        self.api.call("POST", "/feedback", {"request_id": request_id, "label": label})
        self.result.feedback_sent += 1
        self.result.feedback_correct += label == predicted


def simulate(settings: Settings, request: SimulationRequest) -> SimulationResult:
    """Send `request.count` rows of the served version's training data to the API at
    `request.api_url`; ConfigError for a bad request or shift, ApiError when the API is
    unreachable or refuses, TrackingUnavailable / ReportError when the data cannot be read."""
    request.check()
    for text in request.shifts:  # a typo is refused before the API or MLflow is asked
        parse_shift(text)
    # One seed, two streams: the rows drawn do not change with whether feedback is sent.
    seeds = np.random.SeedSequence(request.seed).spawn(2)
    rows_rng, feedback_rng = (np.random.default_rng(s) for s in seeds)
    with ApiClient(request.api_url, request.timeout) as api:
        name, version, run_id = served_version(api)
        schema = served_schema(settings, name, version)
        # Checked against the schema before the training rows are downloaded.
        shifts = resolve_shifts(request.shifts, schema)
        if request.feedback_accuracy is not None and not schema.class_labels:
            raise ConfigError(f"--feedback-accuracy: {name} carries no class labels")
        features, truth = served_rows(schema, name, version, run_id)
        if request.feedback_truth and not truth:
            raise ConfigError(f"--feedback-truth: {name} version {version} has no class labels")
        served = Served(name, version, run_id, schema, features, truth)
        rows, labels = draw(served, request.count, shifts, rows_rng)
        result = SimulationResult(served.name, served.version, uuid.uuid4().hex[:10])
        if request.out is not None:
            result.written = write_rows(rows, schema.names, request.out)
            result.sent = len(rows)
            return result
        started = time.monotonic()
        try:
            Simulation(api, request, served, result, feedback_rng, labels).run(rows)
        except ApiError as exc:  # say how far the run got: its rows are in the log already
            raise ApiError(
                f"{exc.message} (after {result.sent} of {request.count} rows sent, "
                f"{result.answered} answered)"
            ) from None
        result.elapsed = time.monotonic() - started
    return result
