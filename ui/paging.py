"""Next/Previous over the API's keyset pages: the `before` cursors of the pages seen so far."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CursorStack:
    """`cursors[i]` is the `before` of page i; page 0 (the newest rows) has none.

    `key` is the filter the pages belong to: another filter starts again at page 0, since a
    cursor of one filter means nothing in another.
    """

    key: str = ""
    cursors: list[str | None] = field(default_factory=lambda: [None])

    @property
    def page(self) -> int:
        return len(self.cursors) - 1

    @property
    def before(self) -> str | None:
        return self.cursors[-1]

    def reset(self, key: str) -> None:
        if key != self.key:
            self.key = key
            self.cursors = [None]

    def next(self, cursor: str | None) -> None:
        """Move to the page after the current one (`cursor` is the current answer's `next`;
        None on the last page, which stays)."""
        if cursor is not None:
            self.cursors.append(cursor)

    def previous(self) -> None:
        """Move to the newer page; page 0 stays."""
        if len(self.cursors) > 1:
            self.cursors.pop()
