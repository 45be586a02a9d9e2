"""Promotion gates: each one decides pass or fail and keeps the numbers it decided on.

The decisions (`quality_gate`, `minimum_gate`, `signature_gate`) are pure functions; `run_gates`
gathers their inputs from the registry: the candidate's held-out rows, both models' scores on
those same rows, both signatures, and a trial prediction on the candidate's input example.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

from lifecycle.core.config import GatesConfig
from lifecycle.core.errors import ConfigError, GateFailed

QUALITY = "quality"
SIGNATURE = "signature"
LOADS = "loads"
MINIMUM = "minimum"
# Gates a forced promotion or a rollback may skip; the others protect whatever serves next.
SKIPPABLE = frozenset({QUALITY, MINIMUM})


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    numbers: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    enforced: bool = True

    @property
    def blocking(self) -> bool:
        return self.enforced and not self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromotionRefused(GateFailed):
    """Gates refused a promotion; `results` holds every gate's numbers for the caller to show."""

    def __init__(self, message: str, results: list[GateResult]) -> None:
        super().__init__(message)
        self.results = results


InputSpec = Mapping[str, tuple[str, bool]]


def quality_gate(
    metric: str, candidate: float, production: float | None, margin: float
) -> GateResult:
    """(a) The candidate is no worse than Production by more than `margin` on the same rows."""
    if production is None:
        return GateResult(
            QUALITY, True, {"candidate": candidate}, "no Production version to compare with"
        )
    threshold = production - margin
    passed = candidate >= threshold
    numbers = {
        "candidate": candidate,
        "production": production,
        "margin": margin,
        "threshold": threshold,
    }
    op = ">=" if passed else "<"
    return GateResult(
        QUALITY,
        passed,
        numbers,
        f"{metric} {candidate:.4f} {op} {production:.4f} - {margin:g} (Production)",
    )


def minimum_gate(metric: str, candidate: float, minimum: float | None) -> GateResult:
    """(d) An optional floor for the metric."""
    if minimum is None:
        return GateResult(MINIMUM, True, {"candidate": candidate}, "no minimum configured")
    passed = candidate >= minimum
    op = ">=" if passed else "<"
    return GateResult(
        MINIMUM,
        passed,
        {"candidate": candidate, "minimum": minimum},
        f"{metric} {candidate:.4f} {op} {minimum:g}",
    )


def signature_gate(candidate: InputSpec | None, production: InputSpec | None) -> GateResult:
    """(b) Same required inputs with the same types as the Production version."""
    if candidate is None:
        return GateResult(SIGNATURE, False, {}, "candidate has no input signature")
    if production is None:
        return GateResult(
            SIGNATURE, True, {"inputs": len(candidate)}, "no Production signature to match"
        )
    missing = sorted(set(production) - set(candidate))
    extra = sorted(set(candidate) - set(production))
    changed = sorted(n for n in set(candidate) & set(production) if candidate[n] != production[n])
    numbers = {
        "candidate_inputs": len(candidate),
        "production_inputs": len(production),
        "missing": missing,
        "extra": extra,
        "type_changed": changed,
    }
    if not (missing or extra or changed):
        return GateResult(SIGNATURE, True, numbers, "inputs match Production")
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"extra {', '.join(extra)}")
    if changed:
        parts.append(
            "type changed "
            + ", ".join(f"{n} {production[n][0]}->{candidate[n][0]}" for n in changed)
        )
    return GateResult(SIGNATURE, False, numbers, "; ".join(parts))


def enforce(results: list[GateResult], skip_quality: bool) -> list[GateResult]:
    """Mark (a) and (d) advisory when forced or rolling back; their numbers are still kept."""
    if not skip_quality:
        return results
    return [
        GateResult(r.name, r.passed, r.numbers, r.detail, enforced=False)
        if r.name in SKIPPABLE
        else r
        for r in results
    ]


def input_spec(model_uri: str) -> InputSpec | None:
    signature = mlflow.models.get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        return None
    out: dict[str, tuple[str, bool]] = {}
    for i, spec in enumerate(signature.inputs.to_dict()):
        name = str(spec.get("name", i))
        out[name] = (
            str(spec.get("type", spec.get("tensor-spec", "?"))),
            bool(spec.get("required", True)),
        )
    return out


def loads_gate(model_uri: str) -> GateResult:
    """(c) The candidate loads as a pyfunc and scores the input example it was logged with."""
    start = time.perf_counter()
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        example = model.input_example
        if example is None:
            return GateResult(LOADS, False, {}, "model was logged without an input example")
        predictions = model.predict(example)
    # Any failure at all means the version cannot serve: the gate reports it, it does not crash.
    except Exception as exc:
        return GateResult(LOADS, False, {}, f"cannot load or score: {_first_line(exc)}")
    rows = len(example) if hasattr(example, "__len__") else 1
    scored = len(predictions) if hasattr(predictions, "__len__") else 1
    numbers = {
        "rows": rows,
        "predictions": scored,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if scored != rows:
        return GateResult(LOADS, False, numbers, f"{scored} predictions for {rows} example rows")
    return GateResult(LOADS, True, numbers, f"scored {rows} example rows")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300]


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    # Each gate downloads model files; MLflow's per-download progress bars would bury the
    # gate table. MLflow reads this switch from the environment at every download.
    key = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def run_gates(
    config: GatesConfig,
    name: str,
    candidate: ModelVersion,
    production: ModelVersion | None,
) -> list[GateResult]:
    """Every gate's result for `candidate` against the current Production version."""
    with _quiet_downloads():
        return _run_gates(config, name, candidate, production)


def _run_gates(
    config: GatesConfig,
    name: str,
    candidate: ModelVersion,
    production: ModelVersion | None,
) -> list[GateResult]:
    from training.evaluate import load_eval_frame, score_model

    cand_uri = f"models:/{name}/{candidate.version}"
    prod_uri = f"models:/{name}/{production.version}" if production is not None else None
    results = [loads_gate(cand_uri), _signature(cand_uri, prod_uri)]

    frame: pd.DataFrame | None = None
    cand_score: float | None = None
    error = ""
    try:
        if not candidate.run_id:
            raise ConfigError("candidate has no source run, so no held-out data")
        frame = load_eval_frame(candidate.run_id)
        cand_score = _metric(config.metric, score_model(cand_uri, frame))
    except ConfigError:
        raise
    except Exception as exc:
        error = f"cannot score candidate: {_first_line(exc)}"
    if cand_score is None or frame is None:
        results.append(GateResult(QUALITY, False, {}, error))
        results.append(GateResult(MINIMUM, config.min_metric is None, {}, error))
        return results

    prod_score: float | None = None
    if prod_uri is not None:
        try:
            prod_score = _metric(config.metric, score_model(prod_uri, frame))
        except ConfigError:
            raise
        except Exception as exc:
            results.append(
                GateResult(
                    QUALITY,
                    False,
                    {"candidate": cand_score},
                    f"cannot score Production on the candidate's held-out rows: {_first_line(exc)}",
                )
            )
    if prod_uri is None or prod_score is not None:
        gate = quality_gate(config.metric, cand_score, prod_score, config.margin)
        gate.numbers["rows"] = len(frame)
        results.append(gate)
    results.append(minimum_gate(config.metric, cand_score, config.min_metric))
    return results


def _signature(cand_uri: str, prod_uri: str | None) -> GateResult:
    try:
        cand = input_spec(cand_uri)
    except Exception as exc:
        return GateResult(SIGNATURE, False, {}, f"cannot read candidate model: {_first_line(exc)}")
    try:
        prod = input_spec(prod_uri) if prod_uri is not None else None
    except Exception as exc:
        return GateResult(SIGNATURE, False, {}, f"cannot read Production model: {_first_line(exc)}")
    return signature_gate(cand, prod)


def _metric(metric: str, scores: Mapping[str, float]) -> float:
    if metric not in scores:
        raise ConfigError(
            f"gates.yaml: metric '{metric}' is not computed; available: {', '.join(sorted(scores))}"
        )
    return float(scores[metric])
