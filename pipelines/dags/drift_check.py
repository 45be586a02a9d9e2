"""drift_check: hourly, a drift and quality report on the served model (Lifecycle's reports);
when the verdict is drift, or live accuracy from feedback is below the configured floor, it
triggers `retrain` with the report's id.

The report's MLflow run (in the monitoring experiment) is tagged with this DAG run, so the
lineage starts at the report.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task
from lifecycle_common import DAG_ARGS, PROJECT_PYTHON, TAG_DAG_RUN, set_run_tags


@dag(
    dag_id="drift_check",
    schedule="@hourly",
    doc_md=__doc__,
    **DAG_ARGS,
)
def drift_check() -> None:
    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def report() -> dict[str, Any]:
        from pipelines.tasks import drift_check

        return drift_check()

    @task.short_circuit
    def needs_retrain(result: dict[str, Any]) -> bool:
        """Tags the report's run with this DAG run; True (go on to the trigger) only when the
        report asks for a retrain."""
        if result.get("report_run_id"):
            set_run_tags(result["report_run_id"], {TAG_DAG_RUN: get_current_context()["run_id"]})
        if result.get("skipped"):
            print(f"no report: {result['skipped']}")
        elif result["retrain"]:
            print(f"retrain: {'; '.join(result['reasons'])} (report {result['report_id']})")
        else:
            print(
                f"no retrain: verdict {result['verdict']}, accuracy {result.get('accuracy')} "
                f"(floor {result.get('min_accuracy')}), report {result['report_id']}"
            )
        return bool(result.get("retrain"))

    result = report()
    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="retrain",
        conf={
            "report_id": "{{ ti.xcom_pull(task_ids='report')['report_id'] }}",
            "drift_dag_run_id": "{{ run_id }}",
        },
    )
    needs_retrain(result) >> trigger


drift_check()
