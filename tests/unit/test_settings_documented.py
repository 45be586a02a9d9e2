"""Every setting is documented in .env.example, the one list users read (GUIDE: settings)."""

from __future__ import annotations

import re

from pydantic import AliasChoices

from lifecycle.core.settings import PROJECT_ROOT, Settings


def _names(field: str) -> set[str]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return {str(choice) for choice in alias.choices}
    return {f"LIFECYCLE_{field.upper()}"}


def test_every_setting_is_in_env_example() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    missing = [field for field in Settings.model_fields if not _names(field) & documented]
    assert not missing, f"settings missing from .env.example: {missing}"
