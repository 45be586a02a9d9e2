"""Many small scoring requests scored and stored as one, for the async transports.

A one-row message costs little to score but a lot in fixed costs: a model call (milliseconds
for a pipeline, whatever the number of rows), a database transaction, bookkeeping. Messages
that arrive together are parsed one by one (a bad one fails alone), scored by ONE
`serving.inference.infer` call over their stacked rows with one model snapshot, and stored by
ONE `PredictionStore.write` (one transaction). Each request keeps its own ids, answer and error.

`score_many` stores before it returns, so its caller may acknowledge every request it answered:
a store failure raises for the whole batch and nothing of it is answered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lifecycle.core.errors import LifecycleError
from serving import validation
from serving.async_scoring import storable_failures
from serving.group_commit import Done, GroupCommit
from serving.inference import Inference, InferenceRequest, infer, row_ids
from serving.runtime import LoadedModel
from serving.validation import Rows
from serving.wiring import Runtime


@dataclass(slots=True)
class Pending:
    """One request as a transport received it; `started` is when (perf_counter); `task_id`
    names the Celery task carrying it, if any."""

    request_id: str
    body: Any
    source: str = "async"
    started: float = field(default_factory=time.perf_counter)
    task_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """The /predict answer of one request, or why it has none (a clean, storable error)."""

    answer: dict[str, Any] | None = None
    error: LifecycleError | None = None


def score_many(runtime: Runtime, items: Sequence[Pending]) -> list[Outcome]:
    """Score and store `items` together; one Outcome per item, in order.

    Raises what the store or the model holder raises (StoreUnavailable, ModelUnavailable, ...)
    for the whole batch: then no item is stored-and-answered, and the caller retries them all
    (rows stored by a partial attempt are skipped by request id on the retry).
    """
    outcomes = [Outcome() for _ in items]
    model = runtime.model()
    parsed: list[tuple[int, Rows]] = []
    for i, item in enumerate(items):
        try:
            with storable_failures(item.request_id):
                rows = validation.parse_predict(
                    item.body, model.schema, runtime.settings.max_batch_rows
                )
        except LifecycleError as exc:
            outcomes[i].error = exc
            continue
        parsed.append((i, rows))
    scored = _infer_together(model, items, parsed, outcomes)
    records = [record for _, result in scored for record in result.records]
    if records:
        runtime.store.write(records)
    for i, result in scored:
        runtime.observe(result)
        outcomes[i].answer = result.answer()
    return outcomes


def _infer_together(
    model: LoadedModel,
    items: Sequence[Pending],
    parsed: list[tuple[int, Rows]],
    outcomes: list[Outcome],
) -> list[tuple[int, Inference]]:
    """One `infer` per source over every parsed item's rows, split back per item. When the
    joint call fails (one row's output not finite), each item is scored alone so that only
    the guilty one fails."""
    by_source: dict[str, list[tuple[int, Rows]]] = {}
    for i, rows in parsed:
        by_source.setdefault(items[i].source, []).append((i, rows))
    scored: list[tuple[int, Inference]] = []
    for source, group in by_source.items():
        if len(group) > 1:
            try:
                scored.extend(_joint(model, items, group, source))
                continue
            except Exception:  # each item is scored alone just below
                pass
        for i, rows in group:
            item = items[i]
            request = InferenceRequest(rows, item.request_id, source, started=item.started)
            try:
                with storable_failures(item.request_id):
                    scored.append((i, infer(model, request)))
            except LifecycleError as exc:
                outcomes[i].error = exc
    scored.sort(key=lambda pair: pair[0])
    return scored


def _joint(
    model: LoadedModel, items: Sequence[Pending], group: list[tuple[int, Rows]], source: str
) -> list[tuple[int, Inference]]:
    ids: list[str] = []
    for i, rows in group:
        ids.extend(row_ids(items[i].request_id, len(rows)))
    stacked = Rows(np.concatenate([rows.X for _, rows in group]), batch=True)
    joint = infer(model, InferenceRequest(stacked, "", source, row_ids=ids))
    now = time.perf_counter()
    out: list[tuple[int, Inference]] = []
    start = 0
    for i, rows in group:
        item = items[i]
        end = start + len(rows)
        # Each request's latency runs from its own arrival, as if it had been scored alone.
        latency_ms = (now - item.started) * 1000
        records = [dataclasses.replace(r, latency_ms=latency_ms) for r in joint.records[start:end]]
        probabilities = joint.probabilities[start:end] if joint.probabilities else None
        request = InferenceRequest(rows, item.request_id, source, started=item.started)
        out.append(
            (
                i,
                Inference(
                    model,
                    request,
                    joint.ids[start:end],
                    joint.predictions[start:end],
                    joint.labels[start:end],
                    probabilities,
                    joint.at,
                    records,
                ),
            )
        )
        start = end
    return out


class ScoringBatcher:
    """Group commit (serving/group_commit.py) for scoring tasks that run on threads: each task
    hands its request over and waits; one thread scores and stores every request waiting at
    that moment with `score_many` and wakes their tasks. A task returns only once its rows are
    committed, so with `acks_late` a task acknowledged is a task stored.

    `on_stored(items, outcomes)`, when given, runs in that thread after the batch's rows are
    committed and before any task wakes: the Celery worker commits the batch's task states
    there, in one transaction instead of one per task. What it raises fails the whole batch.
    """

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        max_items: int = 256,
        on_stored: Callable[[Sequence[Pending], Sequence[Outcome]], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._on_stored = on_stored
        self._group: GroupCommit[Pending, Outcome] = GroupCommit(
            self._score, "score-batch", max_items
        )

    def score(
        self, request_id: str, body: Any, source: str = "async", task_id: str | None = None
    ) -> dict[str, Any]:
        """The /predict answer once stored; raises the request's own error, or the batch's."""
        outcome = self._group.submit(Pending(request_id, body, source, task_id=task_id))
        if outcome.error is not None:
            raise outcome.error
        assert outcome.answer is not None
        return outcome.answer

    def score_later(self, item: Pending, done: Done[Outcome]) -> None:
        """`score` without waiting: `done(outcome, failure)` runs in the batch's thread once
        the batch is stored (and `on_stored` ran), with the item's Outcome, or None and the
        batch's failure. For a transport's own event loop (serving/score_strategy.py)."""
        self._group.submit_nowait(item, done)

    def stop(self, timeout: float = 10.0) -> None:
        self._group.stop(timeout)

    def _score(self, items: Sequence[Pending]) -> list[Outcome]:
        try:
            outcomes = score_many(self._runtime(), items)
            if self._on_stored is not None:
                self._on_stored(items, outcomes)
            return outcomes
        except LifecycleError:
            raise
        except Exception as exc:
            # One clean, storable line for every task of the batch; the traceback is logged.
            with storable_failures(items[0].request_id):
                raise exc
            raise


__all__ = ["Outcome", "Pending", "ScoringBatcher", "score_many"]
