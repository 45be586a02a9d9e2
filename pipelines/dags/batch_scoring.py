"""batch_scoring: every 30 minutes, score the files dropped in the pipeline inbox.

Each file (CSV or Parquet, e.g. what `lifecycle simulate --out` writes) is claimed, scored by
the API's batch endpoint on the worker, and moved to done/ with its scored output and a summary
beside it (rows, model version), or to failed/ with the reason. The run is recorded in MLflow:
one run per DAG run with the row counts and the model versions used.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from lifecycle_common import (
    DAG_ARGS,
    PROJECT_PYTHON,
    TAG_DAG_RUN,
    experiment_id,
    mlflow_api,
)


@dag(
    dag_id="batch_scoring",
    schedule="*/30 * * * *",
    doc_md=__doc__,
    **DAG_ARGS,
)
def batch_scoring() -> None:
    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def context() -> dict[str, Any]:
        from pipelines.tasks import context

        return context()

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def claim() -> list[str]:
        from pipelines.tasks import claim_files

        return claim_files()

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def score(path: str) -> dict[str, Any]:
        from pipelines.tasks import score_file

        return score_file(path)

    @task
    def record(settings: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
        """One MLflow run for this DAG run; fails the run when a file failed, after recording."""
        results = list(results)
        done = [r for r in results if r.get("status") == "done"]
        failed = [r for r in results if r.get("status") != "done"]
        versions = sorted({str(r["model_version"]) for r in done if r.get("model_version")})
        summary = {
            "files": len(results),
            "done": len(done),
            "failed": len(failed),
            "rows": sum(int(r.get("rows") or 0) for r in done),
            "model_versions": versions,
        }
        run_id = get_current_context()["run_id"]
        now = int(time.time() * 1000)
        created = mlflow_api(
            "POST",
            "runs/create",
            {
                "experiment_id": experiment_id(settings["pipelines_experiment"]),
                "run_name": f"batch_scoring {run_id}",
                "start_time": now,
                "tags": [
                    {"key": TAG_DAG_RUN, "value": run_id},
                    {"key": "lifecycle.pipeline", "value": "batch_scoring"},
                    {"key": "lifecycle.model_name", "value": settings["model_name"]},
                    {"key": "lifecycle.model_versions", "value": ",".join(versions)},
                ],
            },
        )
        mlflow_run = created["run"]["info"]["run_id"]
        metrics = ("files", "done", "failed", "rows")
        mlflow_api(
            "POST",
            "runs/log-batch",
            {
                "run_id": mlflow_run,
                "metrics": [
                    {"key": f"batch_{k}", "value": summary[k], "timestamp": now, "step": 0}
                    for k in metrics
                ],
            },
        )
        mlflow_api(
            "POST",
            "runs/update",
            {"run_id": mlflow_run, "status": "FINISHED", "end_time": int(time.time() * 1000)},
        )
        print(f"recorded MLflow run {mlflow_run}: {summary}")
        if failed:
            reasons = "; ".join(f"{r.get('file')}: {r.get('reason')}" for r in failed)
            raise AirflowFailException(f"{len(failed)} file(s) moved to failed/: {reasons}")
        return {**summary, "mlflow_run_id": mlflow_run}

    record(context(), score.expand(path=claim()))


batch_scoring()
