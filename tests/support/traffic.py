"""Traffic for tests on a scoring stack: simulated rows (reports.simulate) waited for in the
prediction log, and a steady trickle of predictions in the background."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx

from reports.simulate import SimulationRequest, SimulationResult, simulate
from tests.support.api import IRIS_ROW
from tests.support.stack import Stack


def simulated(
    stack: Stack, count: int, seed: int | None = None, **options: object
) -> SimulationResult:
    """`count` rows through the API in batches of 50, all answered and all in the store."""
    request = SimulationRequest(
        api_url=stack.api.url,
        count=count,
        seed=int(time.time()) if seed is None else seed,
        batch_size=50,
        **options,  # type: ignore[arg-type]
    )
    result = simulate(stack.settings, request)
    assert result.answered == count
    wait_stored(stack, result)
    return result


def wait_stored(stack: Stack, result: SimulationResult, timeout: float = 30) -> None:
    """The store writes in the background: wait until the last row is in."""
    deadline = time.monotonic() + timeout
    while not stack.stored("request_id = :r", r=result.request_ids[-1]):
        assert time.monotonic() < deadline, "simulated rows never reached the store"
        time.sleep(0.2)


@contextlib.contextmanager
def steady_traffic(url: str, every: float = 0.2) -> Iterator[None]:
    """A prediction every `every` seconds while the block runs: real traffic, so a newly
    served version answers one soon after its swap."""
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.wait(every):
                with contextlib.suppress(httpx.HTTPError):
                    client.post("/predict", json={"features": IRIS_ROW})

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(10)
