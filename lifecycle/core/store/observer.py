"""What the prediction store reports as it goes (Prometheus counts it in serving)."""

from __future__ import annotations

from typing import Protocol


class StoreObserver(Protocol):
    def queue_depth(self, depth: int) -> None: ...
    def written(self, n: int) -> None: ...
    def spooled(self, n: int) -> None: ...
    def replayed(self, n: int) -> None: ...
    def dropped(self, n: int) -> None: ...
    def shed(self, n: int) -> None: ...


class NoObserver:
    def queue_depth(self, depth: int) -> None:
        pass

    def written(self, n: int) -> None:
        pass

    def spooled(self, n: int) -> None:
        pass

    def replayed(self, n: int) -> None:
        pass

    def dropped(self, n: int) -> None:
        pass

    def shed(self, n: int) -> None:
        pass
