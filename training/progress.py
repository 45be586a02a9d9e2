"""`lifecycle tune`'s progress: a live bar on a terminal, one line per trial otherwise.

A redrawn bar in a log file or CI output is noise (carriage returns), so when stderr is not
a terminal each trial prints one plain line instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from training.tune import OnTrial, TrialDone


def best_text(trial: TrialDone) -> str:
    if trial.best_value is None:
        return "no trial completed yet"
    return f"best {trial.best_value:.4f} (trial {trial.best_number})"


def trial_line(trial: TrialDone) -> str:
    outcome = f"{trial.value:.4f}" if trial.value is not None else trial.state.lower()
    return f"trial {trial.done}/{trial.total} (#{trial.number}): {outcome}  {best_text(trial)}"


@contextmanager
def trial_progress(total: int) -> Iterator[OnTrial]:
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda trial: typer.echo(trial_line(trial), err=True)
        return
    columns = (
        TextColumn("tune"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=total)

        def update(trial: TrialDone) -> None:
            progress.update(task, completed=trial.done, description=best_text(trial))

        yield update
