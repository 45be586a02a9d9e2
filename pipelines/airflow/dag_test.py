"""Run in Airflow's virtualenv: describe Lifecycle's DAGs, or run one with `dag.test()`.

    python dag_test.py --out FILE describe     → JSON: import errors; per DAG its schedule,
                                                 tasks and the modules each DAG file imports
    python dag_test.py --out FILE test DAG_ID [--conf JSON]
                                               → JSON: the run's state, each task's state, XComs

The JSON goes to FILE: Airflow's and the tasks' logs own stdout.

The tests (tests/pipelines/) drive Airflow through this script, in Airflow's own environment,
so nothing imports Airflow into the project's.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any


def _bag() -> Any:
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    folder = conf.get("core", "dags_folder")
    return DagBag(dag_folder=folder)


def _imports(path: str) -> dict[str, list[str]]:
    """The modules a DAG file imports at its top level, and inside its functions."""
    tree = ast.parse(Path(path).read_text())
    top = {id(node) for node in tree.body}
    found: dict[str, set[str]] = {"module": set(), "functions": set()}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found["module" if id(node) in top else "functions"].update(names)
    return {where: sorted(modules) for where, modules in found.items()}


def describe() -> dict[str, Any]:
    bag = _bag()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "fileloc": dag.fileloc,
            "schedule": str(getattr(dag, "schedule", None)),
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tasks": {t.task_id: type(t).__name__ for t in dag.tasks},
            "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        }
    files = sorted({str(p) for p in Path(bag.dag_folder).glob("*.py")})
    return {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": dags,
        "imports": {f: _imports(f) for f in files},
    }


def run(dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = _bag()
    if dag_id not in bag.dags:
        raise SystemExit(f"unknown DAG {dag_id}; known: {', '.join(sorted(bag.dags))}")
    dag_run = bag.dags[dag_id].test(run_conf=conf)
    tasks: dict[str, str] = {}
    xcoms: dict[str, Any] = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            tasks[key] = str(ti.state)
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id
        )
        for row in rows:
            if row.key != "return_value":
                continue
            key = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            xcoms[key] = XComModel.deserialize_value(row)
    return {"run_id": dag_run.run_id, "state": str(dag_run.state), "tasks": tasks, "xcom": xcoms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("describe")
    test = sub.add_parser("test")
    test.add_argument("dag_id")
    test.add_argument("--conf", default="{}")
    args = parser.parse_args()
    result = describe() if args.command == "describe" else run(args.dag_id, json.loads(args.conf))
    args.out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
