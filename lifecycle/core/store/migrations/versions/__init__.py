"""The prediction store's revisions, oldest first by their `down_revision` chain."""
