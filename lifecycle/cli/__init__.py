"""The composition root: the `lifecycle` command, `lifecycle up` and its process supervisor.

It imports every layer, so it sits on top of them all; nothing imports it."""
