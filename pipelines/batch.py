"""batch_scoring's work: claim the files in the inbox, score each through the API's batch
endpoint (the worker scores it), and file the input, its scored output and a summary in done/,
or the input and the reason in failed/.

Folders under settings.resolved_pipeline_dir(): inbox/ (drop files here; write them as
`*.partial` or dot-files and rename, so a half-written file is never claimed), processing/
(claimed by a run), done/, failed/. A claim is a rename, so two runs never score one file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from lifecycle.core.config import BatchConfig
from lifecycle.core.errors import LifecycleError
from pipelines.api import ServiceUnreachable
from reports.simulate import answer_detail

INBOX, PROCESSING, DONE, FAILED = "inbox", "processing", "done", "failed"
CONTENT_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
# Uploads and downloads of large files: generous, the task timeout bounds the whole wait.
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class BatchTaskTimeout(LifecycleError):
    status_code = 504


@dataclass(frozen=True)
class Folders:
    root: Path

    def __getitem__(self, name: str) -> Path:
        return self.root / name

    def create(self) -> None:
        for name in (INBOX, PROCESSING, DONE, FAILED):
            self[name].mkdir(parents=True, exist_ok=True)


def claim_files(root: Path) -> list[str]:
    """Move every CSV/Parquet file of inbox/ to processing/; their new paths, by name."""
    folders = Folders(root)
    folders.create()
    claimed = []
    for path in sorted(folders[INBOX].iterdir()):
        if not _claimable(path):
            continue
        target = _free(folders[PROCESSING], path.name)
        try:
            os.rename(path, target)
        except FileNotFoundError:  # another run claimed it first
            continue
        print(f"claimed {path.name}")
        claimed.append(str(target))
    print(f"{len(claimed)} file(s) claimed from {folders[INBOX]}")
    return claimed


def _claimable(path: Path) -> bool:
    name = path.name
    return (
        path.is_file()
        and not name.startswith(".")
        and not name.endswith(".partial")
        and path.suffix.lower() in CONTENT_TYPES
    )


def score_file(api_url: str, config: BatchConfig, path: str) -> dict[str, Any]:
    """Score one claimed file (see the module docstring). A file the API or the worker refuses
    goes to failed/ and the answer says why (status "failed"); an unreachable API puts the file
    back in the inbox and raises ServiceUnreachable; a task that outlasts the timeout goes to
    failed/ and raises BatchTaskTimeout."""
    source = Path(path)
    folders = Folders(source.parent.parent)
    folders.create()
    if not source.is_file():
        raise FileNotFoundError(f"{source}: not a claimed file (was it moved or scored already?)")
    ctype = CONTENT_TYPES.get(source.suffix.lower())
    if ctype is None:
        return _failed(folders, source, f"not a CSV or Parquet file: {source.name}")
    with httpx.Client(base_url=api_url, timeout=_HTTP_TIMEOUT) as client:
        task_id, refusal = _submit(client, folders, source, ctype)
        if task_id is None:
            return _failed(folders, source, refusal)
        print(f"{source.name}: task {task_id} queued at {api_url}")
        state, body = _wait(client, task_id, config)
        if state == "timeout":
            reason = (
                f"task {task_id} not finished after {config.task_timeout:g}s (batch.task_timeout)"
            )
            _failed(folders, source, reason)
            raise BatchTaskTimeout(f"{source.name}: {reason}")
        if state == "failure":
            return _failed(folders, source, f"task {task_id} failed: {body.get('error')}")
        result: dict[str, Any] = body.get("result") or {}
        output = _download(client, folders, source, task_id, str(result.get("format") or ""))
    return _done(folders, source, task_id, result, output)


def _submit(
    client: httpx.Client, folders: Folders, source: Path, ctype: str
) -> tuple[str | None, str]:
    """(the task id, ""), or (None, why) when the API refused the file."""
    try:
        with source.open("rb") as fh:
            response = client.post("/batch", content=fh, headers={"content-type": ctype})
    except httpx.TransportError as exc:
        _back_to_inbox(folders, source)
        raise ServiceUnreachable(
            f"API unreachable at {client.base_url} ({type(exc).__name__}): "
            f"{source.name} returned to inbox/"
        ) from exc
    if response.status_code >= 500:
        # The broker or the API is down, not the file wrong: it waits for the next run.
        _back_to_inbox(folders, source)
        raise ServiceUnreachable(
            f"API at {client.base_url} answered {response.status_code} "
            f"({answer_detail(response)}): {source.name} returned to inbox/"
        )
    if response.status_code != 202:
        return None, f"refused by the API: HTTP {response.status_code}: {answer_detail(response)}"
    return str(response.json()["task_id"]), ""


def _wait(client: httpx.Client, task_id: str, config: BatchConfig) -> tuple[str, dict[str, Any]]:
    """("success" | "failure", the task's status body), or ("timeout", {})."""
    deadline = time.monotonic() + config.task_timeout
    rows_seen = None
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/tasks/{task_id}")
        except httpx.TransportError:
            response = None  # a restarting API: the task goes on in the worker, keep asking
        if response is not None and response.status_code == 200:
            body: dict[str, Any] = response.json()
            if body["status"] in ("success", "failure"):
                return body["status"], body
            rows = (body.get("progress") or {}).get("rows")
            if rows is not None and rows != rows_seen:
                print(f"task {task_id}: {rows} rows scored")
                rows_seen = rows
        time.sleep(config.poll_interval)
    return "timeout", {}


def _download(client: httpx.Client, folders: Folders, source: Path, task_id: str, fmt: str) -> Path:
    ext = f".{fmt}" if fmt else source.suffix.lower()
    target = _free(folders[DONE], f"{source.stem}.scored{ext}")
    partial = target.with_name(f".{target.name}.partial")
    with client.stream("GET", f"/batch/{task_id}/output") as response:
        if response.status_code != 200:
            response.read()
            raise LifecycleError(
                f"{source.name}: output of task {task_id} unavailable: "
                f"HTTP {response.status_code}: {answer_detail(response)}"
            )
        with partial.open("wb") as fh:
            for chunk in response.iter_bytes():
                fh.write(chunk)
    os.replace(partial, target)
    return target


def _done(
    folders: Folders, source: Path, task_id: str, result: dict[str, Any], output: Path
) -> dict[str, Any]:
    model = result.get("model") or {}
    moved = _free(folders[DONE], source.name)
    os.replace(source, moved)
    summary = {
        "file": moved.name,
        "rows": int(result.get("rows") or 0),
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "task_id": task_id,
        "output": str(output),
        "scored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_text(folders[DONE] / f"{moved.stem}.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"{source.name}: {summary['rows']} rows scored by {summary['model_name']} "
        f"v{summary['model_version']} -> {output.name}"
    )
    return {
        "file": moved.name,
        "status": "done",
        "rows": summary["rows"],
        "model_name": summary["model_name"],
        "model_version": summary["model_version"],
        "task_id": task_id,
        "output": str(output),
    }


def _failed(folders: Folders, source: Path, reason: str) -> dict[str, Any]:
    moved = _free(folders[FAILED], source.name)
    os.replace(source, moved)
    _write_text(folders[FAILED] / f"{moved.stem}.reason.txt", reason + "\n")
    print(f"{source.name}: moved to failed/: {reason}")
    return {"file": moved.name, "status": "failed", "reason": reason}


def _back_to_inbox(folders: Folders, source: Path) -> None:
    os.replace(source, _free(folders[INBOX], source.name))


def _free(folder: Path, name: str) -> Path:
    """`folder/name`, or with a UTC time stamp before the suffix when that name is taken (a
    file dropped twice under one name keeps both results)."""
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = Path(name)
    return folder / f"{path.stem}-{stamp}{path.suffix}"


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
