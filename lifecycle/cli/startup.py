"""Waiting for a supervised child to serve: shared by `lifecycle up` and the Airflow start."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from lifecycle.cli.supervisor import Supervisor
from lifecycle.core.errors import LifecycleError


class StartupFailed(LifecycleError):
    """A part of the embedded stack did not come up."""


def wait_http(
    supervisor: Supervisor,
    url: str,
    timeout: float = 120.0,
    ready: Callable[[httpx.Response], bool] | None = None,
) -> httpx.Response:
    """Until `url` answers 200 (and `ready` accepts the answer); a child that dies meanwhile,
    or Ctrl-C, ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        dead = supervisor.first_exited()
        if dead is not None:
            raise StartupFailed(
                f"{dead.name} exited with code {dead.process.returncode}; see {dead.log}"
            )
        if supervisor.stopping.is_set():
            raise KeyboardInterrupt
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200 and (ready is None or ready(response)):
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise StartupFailed(f"{url} did not answer within {timeout:g}s")
        time.sleep(0.5)
