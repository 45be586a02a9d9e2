"""retrain: from a drift report to a new model version serving traffic, with no human step.

Triggered by drift_check (conf: {"report_id": ...}) or by hand. It trains on the served
version's training rows plus the labelled production rows (predictions joined with feedback),
runs the MLproject `main` entry point with `mlflow run` (train → register → gates → promotion to
the stage in conf/pipelines.yaml), then waits until the API and the worker serve the new version.
A candidate refused by the gates fails the run, with the gate table in the task's log, and is
counted (lifecycle_automatic_promotions_total{outcome="refused"}, alert
LifecycleAutomaticPromotionRefused).

Lineage, as MLflow tags: the report's run → lifecycle.retrain_run_id / retrained_version; the
training run and the model version → lifecycle.drift_report_id; the version →
lifecycle.first_request_id, the first prediction it served.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from lifecycle_common import (
    DAG_ARGS,
    PROJECT_PYTHON,
    TAG_DAG_RUN,
    TAG_FIRST_REQUEST,
    TAG_REPORT_ID,
    TAG_RETRAIN_RUN,
    TAG_RETRAINED_VERSION,
    mlflow_api,
    report_run_id,
    set_run_tags,
    set_version_tags,
)

_REPORT_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dag(
    dag_id="retrain",
    schedule=None,
    params={
        "report_id": Param(
            None, type=["null", "string"], description="The drift report that asked for it."
        )
    },
    doc_md=__doc__,
    **DAG_ARGS,
)
def retrain() -> None:
    @task
    def trigger() -> dict[str, Any]:
        """Who asked: the report id from the run's conf, and this run's id."""
        context = get_current_context()
        report_id = context["params"].get("report_id")
        if report_id in ("", "None"):
            report_id = None
        if report_id is not None and not _REPORT_ID.match(str(report_id)):
            raise AirflowFailException(
                f"conf report_id must be a report id (letters, digits, - or _), got {report_id!r}"
            )
        return {"report_id": report_id, "dag_run_id": context["run_id"]}

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def context() -> dict[str, Any]:
        from pipelines.tasks import context

        return context()

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def training_set(asked: dict[str, Any]) -> dict[str, Any]:
        from pipelines.tasks import build_training_set

        return build_training_set(asked["report_id"], asked["dag_run_id"])

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def train_and_promote(rows: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
        from pipelines.tasks import train_and_promote

        return train_and_promote(rows, asked["report_id"], asked["dag_run_id"])

    @task
    def lineage(
        trained: dict[str, Any], asked: dict[str, Any], settings: dict[str, Any]
    ) -> dict[str, Any]:
        """Tags that lead from the report to the version and back; checks the registry holds
        the version in the stage the promotion reported."""
        name, version = trained["model_name"], str(trained["version"])
        found = mlflow_api("GET", "model-versions/get", {"name": name, "version": version})
        stage = found["model_version"].get("current_stage")
        if stage != trained["stage"]:
            raise AirflowFailException(
                f"{name} v{version} is in stage {stage}, not {trained['stage']}"
            )
        links = {TAG_RETRAIN_RUN: trained["run_id"], TAG_DAG_RUN: asked["dag_run_id"]}
        report_run = None
        if asked["report_id"]:
            links[TAG_REPORT_ID] = asked["report_id"]
            report_run = report_run_id(asked["report_id"], settings["monitoring_experiment"])
            if report_run is None:
                print(f"report {asked['report_id']} has no MLflow run: its side is not tagged")
            else:
                set_run_tags(
                    report_run,
                    {TAG_RETRAIN_RUN: trained["run_id"], TAG_RETRAINED_VERSION: version},
                )
        set_version_tags(name, version, links)
        set_run_tags(
            trained["run_id"],
            {k: v for k, v in links.items() if k != TAG_RETRAIN_RUN},
        )
        print(f"lineage: report {asked['report_id']} → run {trained['run_id']} → {name} v{version}")
        return {**trained, "report_run_id": report_run}

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def wait_served(trained: dict[str, Any]) -> dict[str, Any]:
        from pipelines.tasks import wait_until_served

        return wait_until_served(trained["model_name"], str(trained["version"]), trained["stage"])

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def first_prediction(trained: dict[str, Any]) -> dict[str, Any]:
        from pipelines.tasks import first_prediction

        return first_prediction(trained["model_name"], str(trained["version"]))

    @task
    def record_first(trained: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
        if first.get("request_id"):
            set_version_tags(
                trained["model_name"],
                str(trained["version"]),
                {TAG_FIRST_REQUEST: first["request_id"]},
            )
            print(f"v{trained['version']} first served request {first['request_id']}")
        else:
            print(f"v{trained['version']} served no prediction yet: no first-request tag")
        return {**trained, "first_request_id": first.get("request_id")}

    asked = trigger()
    settings = context()
    trained = train_and_promote(training_set(asked), asked)
    tagged = lineage(trained, asked, settings)
    served = wait_served(tagged)
    first = first_prediction(tagged)
    served >> first
    record_first(tagged, first)


retrain()
