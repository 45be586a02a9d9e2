"""Which file a finished batch task may hand out over HTTP: `GET /batch/{task_id}/output`.

Only the path the task itself reported, and only when it lies inside the batch folder: a task
sent with an `output_path` elsewhere wrote a file the API has no business serving, and a
symbolic link out of the folder is followed before the check, not after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.core.errors import NotFound
from serving.batch_files import FORMATS

MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@dataclass(frozen=True)
class Download:
    path: Path
    media_type: str
    filename: str


def task_output(task_id: str, result: Any, batch_dir: Path) -> Download:
    """The scored file of a successful file task whose result is `result`, or NotFound."""
    output = result.get("output") if isinstance(result, dict) else None
    if not isinstance(output, str) or not output:
        raise NotFound(f"task {task_id} has no output file")
    try:
        path = Path(output).resolve()
        root = batch_dir.resolve()
    except (OSError, ValueError) as exc:
        raise NotFound(f"task {task_id} has no output file") from exc
    if not path.is_relative_to(root):
        raise NotFound(
            f"task {task_id} wrote its output outside the batch folder; only files under it "
            "are served"
        )
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None or not path.is_file():
        raise NotFound(f"task {task_id}'s output file no longer exists")
    return Download(path, MEDIA_TYPES[fmt], path.name)
