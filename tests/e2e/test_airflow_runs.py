"""The embedded Airflow really runs DAGs (tests/support/airflow.py starts it as `up` does):
on PostgreSQL, with the LocalExecutor, its API server on a free port (tasks must reach that
execution API and share its JWT secret), a task in Airflow's venv handing over to one in the
project's interpreter; and a stop ends every process, a task still running included.

A DAG of this test's own (the pipelines' DAGs are tested in their own modules), so a failure
here points at the runtime, not at a pipeline.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lifecycle.cli.up import child_env
from lifecycle.core.settings import PROJECT_ROOT, Settings
from tests.support.airflow import airflow_services
from tests.support.services import postgres_admin_url

DAG = """
import os

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def runtime_probe():
    @task
    def in_airflow(**context) -> str:
        return context["dag_run"].conf["word"]

    @task.external_python(python=os.environ["LIFECYCLE_PROJECT_PYTHON"], expect_airflow=False)
    def in_project(word: str, marker: str, sleep: str) -> str:
        import sys
        import time

        import lifecycle.core.settings

        print(f"probe word={word} python={sys.executable}")
        with open(marker, "w") as out:
            out.write(f"{word} {sys.executable} {lifecycle.core.settings.PROJECT_ROOT}")
        time.sleep(float(sleep))
        return word

    in_project(
        in_airflow(),
        "{{ dag_run.conf['marker'] }}",
        "{{ dag_run.conf['sleep'] }}",
    )


runtime_probe()
"""


def _processes_with(home: Path) -> list[int]:
    """Live processes started with AIRFLOW_HOME=home (their titles do not name it)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(proc.name))
    return found


def test_a_dag_run_executes_in_both_environments_and_stop_leaves_no_process(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "runtime_probe.py").write_text(DAG)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_admin_url())
    done, hanging = tmp_path / "done.txt", tmp_path / "hanging.txt"
    with airflow_services(settings, child_env(settings), tmp_path, dags_folder=dags) as airflow:
        assert airflow.login.username == "admin"
        assert airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        run_id = airflow.trigger(
            "runtime_probe", {"word": "hello", "marker": str(done), "sleep": 0}
        )
        state = airflow.wait_run("runtime_probe", run_id, timeout=180)
        assert state == "success", airflow.explain("runtime_probe", run_id)
        assert airflow.task_instances("runtime_probe", run_id) == {
            "in_airflow": "success",
            "in_project": "success",
        }
        word, python, root = done.read_text().split()
        assert word == "hello"
        # The project's interpreter (the one running this test), not Airflow's.
        assert python == sys.executable
        assert root == str(PROJECT_ROOT)
        log = airflow.task_log("runtime_probe", run_id, "in_project")
        assert "probe word=hello" in log, log
        assert [r["dag_run_id"] for r in airflow.runs("runtime_probe")] == [run_id]

        # A task still running when Airflow stops: its processes (a group of their own under
        # the LocalExecutor's worker) must not outlive the stop.
        long_run = airflow.trigger(
            "runtime_probe", {"word": "hang", "marker": str(hanging), "sleep": 600}
        )
        deadline = time.monotonic() + 120
        while not hanging.exists():
            assert time.monotonic() < deadline, airflow.run("runtime_probe", long_run)
            time.sleep(0.5)
        assert _processes_with(airflow.home)
    # Ended with the rest: a task process sits in a process group of its own, which stopping
    # the scheduler's group does not reach.
    assert _processes_with(airflow.home) == []
