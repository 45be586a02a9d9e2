"""REST rows whose request id the server generated skip the prediction log's request-id
lookup (PredictionRecord.recheck is False); a client's X-Request-Id keeps it, on the fast path
and on the FastAPI routes alike. Seen where the flag is kept: the spool, written here because
the store's database cannot be opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving.api.app import create_app
from serving.runtime import ModelHolder, ModelTarget
from tests.support.fixed_model import FixedVersion, load_iris

ROW = [5.1, 3.5, 1.4, 0.2]
NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def _spooled(spool: Path) -> dict[str, dict[str, object]]:
    """Spooled rows by request id; a request of many rows is one line (a chunk)."""
    lines = [json.loads(line) for f in sorted(spool.rglob("*.jsonl")) for line in f.open()]
    rows = {str(line["request_id"]): line for line in lines if "chunk" not in line}
    for line in lines:
        if "chunk" in line:
            chunk = line["chunk"]
            rows.update({rid: {"recheck": chunk["recheck"]} for rid in chunk["request_ids"]})
    return rows


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "routes"])
def test_only_server_generated_ids_skip_the_lookup(tmp_path: Path, fast: bool) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'missing' / 'p.db'}",  # cannot be opened
        data_dir=tmp_path / "data",
        admin_token=None,
        webhook_secret=None,
        prediction_flush_interval=0.02,
    )
    holder = ModelHolder(
        ModelTarget("iris-classifier", stage="Production"), FixedVersion(), load_iris
    )
    holder.reconcile()
    store = PredictionStore.from_settings(settings)
    app = create_app(settings, holder, store, fast_scoring=fast)
    invocation = {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW]}}
    with TestClient(app) as client:
        server = [
            client.post("/predict", json={"features": ROW}),
            client.post("/invocations", json=invocation),
            # Not a valid client id: the server replaces it with its own.
            client.post("/predict", json={"features": ROW}, headers={"X-Request-Id": "a b"}),
        ]
        given = [
            client.post("/predict", json={"features": ROW}, headers={"X-Request-Id": "mine-1"}),
            client.post("/invocations", json=invocation, headers={"X-Request-Id": "mine-2"}),
        ]
        assert all(r.status_code == 200 for r in server + given)
        store.flush(0.5)
    spooled = _spooled(settings.resolved_spool_dir())
    server_ids = [r.headers["x-request-id"] for r in server]
    assert server_ids[2] != "a b"
    expected = {
        server_ids[0]: False,
        f"{server_ids[1]}-0": False,
        f"{server_ids[1]}-1": False,
        server_ids[2]: False,
        "mine-1": True,
        "mine-2-0": True,
        "mine-2-1": True,
    }
    assert {rid: spooled[rid].get("recheck", True) for rid in expected} == expected
