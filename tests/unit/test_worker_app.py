"""The worker's Celery app keeps its tasks to itself: two apps in one process (tests, or
an embedding program) never run each other's callables."""

from __future__ import annotations

import warnings
from pathlib import Path

from celery import Celery

from lifecycle.core.settings import Settings
from serving.worker import REPORT_TASK, SCORE_FILE_TASK, SCORE_TASK, make_celery


def test_tasks_are_registered_on_their_own_app_only(tmp_path: Path) -> None:
    names = {SCORE_TASK, SCORE_FILE_TASK, REPORT_TASK}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Celery's DuplicateTaskNameWarning included
        first = make_celery(Settings(data_dir=tmp_path / "a"))
        second = make_celery(Settings(data_dir=tmp_path / "b"))
        other = Celery("other", set_as_current=False)
        other.finalize()
    assert names <= set(first.tasks) and names <= set(second.tasks)
    assert first.tasks[SCORE_TASK] is not second.tasks[SCORE_TASK]
    assert first.tasks[SCORE_TASK].app is first and second.tasks[SCORE_TASK].app is second
    assert not names & set(other.tasks)
