"""Where a report goes: one MLflow run (HTML, JSON snapshot, tags, a few metrics), a tag on the
model version pointing at it, and its row in the report index.

The run is written through `MlflowClient` calls on an explicit run id, never through the
fluent API's active run, so reports made by concurrent worker threads cannot mix.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core.store.report_index import ReportEntry

# Tags on the monitoring run, and on the model version (the newest report about it).
TAG_PREFIX = "lifecycle.report."
VERSION_TAG_REPORT = "lifecycle.last_report_id"
VERSION_TAG_RUN = "lifecycle.last_report_run_id"


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def log_report(
    client: MlflowClient,
    experiment: str,
    entry: ReportEntry,
    documents: dict[str, str | dict[str, Any]],
) -> ReportEntry:
    """Log the documents (artifact file name -> HTML text or JSON-ready dict) in a new run
    of `experiment`, tag it and the model version; return the entry with run id and
    artifact URIs filled in."""
    tags = {
        f"{TAG_PREFIX}id": entry.id,
        f"{TAG_PREFIX}model_name": entry.model_name,
        f"{TAG_PREFIX}model_version": entry.model_version,
        f"{TAG_PREFIX}window": json.dumps(entry.window, sort_keys=True),
        f"{TAG_PREFIX}verdict": entry.verdict,
        f"{TAG_PREFIX}drifted_features": ",".join(entry.drifted_features),
    }
    run = client.create_run(
        experiment_id(client, experiment),
        run_name=f"report {entry.model_name} v{entry.model_version}",
        tags=tags,
    )
    run_id = run.info.run_id
    try:
        for name, document in documents.items():
            if isinstance(document, str):
                client.log_text(run_id, document, name)
            else:
                client.log_dict(run_id, document, name)
        for key, value in _metrics(entry).items():
            client.log_metric(run_id, key, value)
    except Exception:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id)
    client.set_model_version_tag(
        entry.model_name, entry.model_version, VERSION_TAG_REPORT, entry.id
    )
    client.set_model_version_tag(entry.model_name, entry.model_version, VERSION_TAG_RUN, run_id)
    # drift.html -> drift_html: the names the index, the API and the UI use.
    artifacts = {name.replace(".", "_"): f"runs:/{run_id}/{name}" for name in documents}
    return replace(entry, run_id=run_id, artifacts=artifacts)


def _metrics(entry: ReportEntry) -> dict[str, float]:
    out = {
        "drift_share": entry.drift_share,
        "drifted_features": float(len(entry.drifted_features)),
        "rows": float(entry.rows),
        "sampled_rows": float(entry.sampled_rows),
        "labelled_rows": float(entry.labelled_rows),
    }
    for version, figures in (entry.quality or {}).items():
        for name in ("accuracy", "precision", "recall", "f1"):
            if isinstance(figures.get(name), int | float):
                out[f"v{version}_{name}"] = float(figures[name])
    return out
