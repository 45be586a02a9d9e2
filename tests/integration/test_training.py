"""Training against a real MLflow tracking server backed by the real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import PROJECT_ROOT, Settings
from tests.support.cli import cli_env, run_cli
from tests.unit.test_data import mixed_csv
from training.evaluate import EvaluateRequest, evaluate

EXPECTED_METRICS = {
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "log_loss",
    "roc_auc",
}


def _experiment_runs(client: MlflowClient, name: str) -> list[mlflow.entities.Run]:
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"experiment {name} was not created"
    return list(client.search_runs([exp.experiment_id], max_results=500))


def test_mlflow_run_train_on_wine_records_everything(settings: Settings) -> None:
    env = cli_env(settings)
    # No --experiment-name, as a user types it: the run lands in the configured experiment
    # (LIFECYCLE_EXPERIMENT_NAME here), where `lifecycle train` records, not in "Default".
    result = subprocess.run(
        [
            "mlflow", "run", ".", "-e", "train", "--env-manager", "local",
            "-P", "dataset=wine",
        ],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(settings.resolved_tracking_uri())
    (run,) = _experiment_runs(client, settings.experiment_name)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= EXPECTED_METRICS
    assert run.data.metrics["accuracy"] > 0.8
    assert run.data.params["data.name"] == "wine"
    assert run.data.params["dataset"] == "wine"  # the entry point parameter, logged by mlflow run
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "data"} <= artifacts
    data_files = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert data_files == {"data/train.parquet", "data/eval.parquet"}
    contexts = {d.tags[0].value: d.dataset.name for d in run.inputs.dataset_inputs if d.tags}
    assert contexts == {"training": "wine-training", "evaluation": "wine-evaluation"}
    model_info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert model_info.signature is not None and model_info.signature.inputs is not None
    assert len(model_info.signature.inputs.input_names()) == 13
    assert model_info.saved_input_example_info is not None
    assert model_info.metadata is not None
    assert model_info.metadata["class_labels"] == ["class_0", "class_1", "class_2"]


def test_csv_with_categorical_trains_through_configuration(
    settings: Settings, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf)
    csv = mixed_csv(tmp_path / "churn.csv", rows=200)
    with (conf / "datasets.yaml").open("a") as fh:
        fh.write(f"  churn:\n    source: file\n    path: {csv}\n    target: churned\n")
    settings = settings.model_copy(update={"conf_dir": conf})
    result = run_cli(
        "train", "--dataset", "churn", "--estimator", "random_forest", "--register",
        "--model-name", "churn-test", env=cli_env(settings),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered churn-test version 1" in result.stdout
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    model = mlflow.pyfunc.load_model("models:/churn-test/1")
    import pandas as pd

    scored = model.predict(
        pd.DataFrame({"plan": ["basic", "team", None], "usage": [3.0, float("nan"), 12.0]})
    )
    assert len(scored) == 3
    evaluated = evaluate(settings, EvaluateRequest(model_name="churn-test", version="1"))
    assert evaluated.metrics["accuracy"] > 0.5


def test_tune_runs_nested_trials_and_resumes_its_study(settings: Settings) -> None:
    env = cli_env(settings)
    study = "tune-resume-test"
    # Few trials: each is an MLflow run; what is checked (nesting, resuming, numbering, one
    # line per trial) does not grow with their number.
    first = run_cli("tune", "--trials", "8", "--study", study, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(settings.resolved_tracking_uri())
    runs = _experiment_runs(client, settings.experiment_name)
    parents = [r for r in runs if r.data.tags.get("lifecycle.kind") == "tune"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 8
    assert {r.data.tags["optuna.state"] for r in children} <= {"COMPLETE", "PRUNED"}
    assert "best.C" in parent.data.params
    assert parent.data.metrics["n_trials_total"] == 8

    second = run_cli("tune", "--trials", "3", "--study", study, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"study {study}: 11 trials" in second.stdout
    # Progress, not MLflow's two "View run" lines per trial: at most one line per trial.
    output = second.stdout + second.stderr
    assert "View run" not in output, output
    trial_lines = [line for line in output.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3, output
    assert trial_lines[-1].startswith("trial 3/3 (#10): "), output
    assert "best " in trial_lines[-1], output
    loaded = optuna.load_study(study_name=study, storage=settings.resolved_database_url())
    assert len(loaded.trials) == 11
    numbers = sorted(t.number for t in loaded.trials)
    assert numbers == list(range(11))


@pytest.mark.parametrize("estimator", ["gradient_boosting"])
def test_other_estimators_train(settings: Settings, estimator: str) -> None:
    from training.train import TrainRequest, train

    result = train(
        settings,
        TrainRequest(dataset="breast_cancer", estimator=estimator, params={"n_estimators": 20}),
    )
    assert result.metrics["roc_auc"] > 0.9
