"""The experiment MLflow uses when none is set, inside this project: the configured one.

Registered in pyproject.toml (entry point group `mlflow.default_experiment_provider`).
`mlflow run . -e main` with no --experiment-name asks it before creating its run, so that run
lands where `lifecycle train` records instead of in "Default"; --experiment-name,
MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID still win. MLflow cannot move a run to another
experiment afterwards, so the choice has to be made when `mlflow run` creates it.

MLflow loads this module while it is itself being imported: only leaf modules at the top.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

from lifecycle.core.settings import PROJECT_ROOT, Settings


class ProjectExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        # Only from the project's folder: other code in the same environment keeps Default.
        return Path.cwd().resolve() == PROJECT_ROOT

    def get_experiment_id(self) -> str:
        from mlflow.tracking import MlflowClient

        # MLflow's entry into our code: settings are read here, once, like a command's.
        name = Settings().experiment_name
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        return str(experiment.experiment_id if experiment else client.create_experiment(name))
