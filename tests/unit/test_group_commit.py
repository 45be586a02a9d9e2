"""Group commit without waiting (`submit_nowait`): the result or the batch's failure reaches
each item's callback in the writer thread, and a callback that raises wakes the others."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from serving.group_commit import GroupCommit


def test_callbacks_hear_each_result_or_the_batch_failure_in_the_writer_thread() -> None:
    release, entered = threading.Event(), threading.Event()

    def process(items: Sequence[int]) -> list[int]:
        entered.set()
        release.wait(10)
        if 13 in items:
            raise ValueError("unlucky batch")
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(process, "test-group")
    heard: dict[int, tuple[int | None, str | None, str]] = {}
    done = threading.Semaphore(0)

    def callback(i: int) -> Callable[[int | None, BaseException | None], None]:
        def hear(result: int | None, failure: BaseException | None) -> None:
            heard[i] = (result, failure and str(failure), threading.current_thread().name)
            done.release()
            if i == 2:
                raise RuntimeError("a callback that fails")

        return hear

    # The first item is taken alone and the writer blocks; the next three wait together.
    group.submit_nowait(1, callback(1))
    assert entered.wait(10)
    for i in (2, 3, 4):
        group.submit_nowait(i, callback(i))
    release.set()
    for _ in range(4):
        assert done.acquire(timeout=10)
    group.submit_nowait(13, callback(13))
    assert done.acquire(timeout=10)
    group.stop()

    assert heard[1] == (10, None, "test-group")
    # Item 2's callback raised: 3 and 4, in the same batch, heard theirs all the same.
    assert heard[2][:2] == (20, None) and heard[3][:2] == (30, None) and heard[4][:2] == (40, None)
    assert heard[13] == (None, "unlucky batch", "test-group")
    # A blocking caller after all that still gets its own result.
    again: GroupCommit[int, int] = GroupCommit(process, "again")
    assert again.submit(5) == 50
    again.stop()
