"""What the `promote`, `rollback`, `models` and `main` commands print; the logic is elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from registry.gates import GateResult, PromotionRefused
from registry.listing import KEY_METRICS, list_versions
from registry.promotion import PromotionResult, promote, rollback
from registry.stages import normalize_stage

if TYPE_CHECKING:
    from training.train import TrainRequest

Echo = Callable[[str], None]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
    return "\n".join(lines)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def gates_table(results: Sequence[GateResult]) -> str:
    rows = []
    for r in results:
        verdict = "pass" if r.passed else "FAIL"
        if not r.enforced:
            verdict += " (not enforced)"
        numbers = " ".join(f"{k}={_number(v)}" for k, v in r.numbers.items() if v not in ([], None))
        rows.append([r.name, verdict, numbers, r.detail])
    return table(["gate", "result", "numbers", "detail"], rows)


def _report(result: PromotionResult, echo: Echo) -> None:
    if result.gates:
        echo(gates_table(result.gates))
    if not result.changed:
        echo(f"{result.name} v{result.version} is already in {result.stage}; aliases checked")
        return
    verb = "rolled back to" if result.action == "rollback" else "moved to"
    line = f"{result.name} v{result.version} {verb} {result.stage}"
    if result.alias:
        line += f" (alias '{result.alias}')"
    if result.previous_version:
        line += f"; previous: v{result.previous_version}"
    if result.forced:
        line += "; forced"
    echo(line)


def promote_command(
    settings: Settings,
    name: str,
    version: str,
    stage: str,
    reason: str | None,
    force: bool,
    echo: Echo,
) -> None:
    normalize_stage(stage)
    try:
        result = promote(settings, name, version, stage, reason or None, force)
    except PromotionRefused as exc:
        # The numbers go out before the one-line refusal, so the user sees why.
        echo(gates_table(exc.results))
        raise
    _report(result, echo)


def rollback_command(settings: Settings, name: str, reason: str | None, echo: Echo) -> None:
    try:
        result = rollback(settings, name, reason or None)
    except PromotionRefused as exc:
        echo(gates_table(exc.results))
        raise
    _report(result, echo)


def models_command(settings: Settings, name: str | None, echo: Echo) -> None:
    rows = list_versions(settings, name)
    if not rows:
        echo("no registered models")
        return
    headers = [
        "model",
        "version",
        "stage",
        "aliases",
        *KEY_METRICS,
        "run id",
        "created",
        "promoted",
    ]
    body = []
    for r in rows:
        promoted = r.promoted_at or ""
        if promoted and r.action == "rollback":
            promoted += " (rollback)"
        if promoted and r.forced:
            promoted += " (forced)"
        body.append(
            [
                r.name,
                r.version,
                r.stage,
                ",".join(r.aliases),
                *(f"{r.metrics[m]:.4f}" if m in r.metrics else "" for m in KEY_METRICS),
                r.run_id or "",
                r.created.isoformat(timespec="seconds"),
                promoted,
            ]
        )
    echo(table(headers, body))


def main_command(
    settings: Settings,
    train_request: TrainRequest,
    stage: str,
    reason: str | None,
    force: bool,
    echo: Echo,
) -> None:
    """train → register → promote: the MLproject `main` entry point."""
    from training.metrics import metrics_line
    from training.train import train

    normalize_stage(stage)
    result = train(settings, train_request)
    echo(f"run {result.run_id}  {metrics_line(result.metrics)}")
    if result.registered_name is None or result.version is None:
        raise LifecycleError("training did not register a model")
    echo(f"registered {result.registered_name} version {result.version}")
    promote_command(
        settings,
        result.registered_name,
        result.version,
        stage,
        reason or f"trained by run {result.run_id}",
        force,
        echo,
    )
