"""`lifecycle up`: the embedded stack comes up with a model and stops cleanly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.support.up import lifecycle_up


def test_up_bootstraps_a_model_prints_urls_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "home"
    with lifecycle_up(data_dir) as up:
        mlflow_url = up.urls["MLflow UI and registry"]
        assert httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200
        client = MlflowClient(mlflow_url)
        versions = client.search_model_versions("name = 'iris-classifier'")
        assert [v.version for v in versions] == ["1"]
        assert (data_dir / "mlflow.db").is_file()
        assert any((data_dir / "artifacts").iterdir())
    assert up.process.returncode == 0, up.text()
    assert "stopping" in up.text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{mlflow_url}/health", timeout=2)
