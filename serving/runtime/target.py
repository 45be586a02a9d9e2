"""What to serve (a stage, an alias or a pinned version) and what the registry says it is."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings


@dataclass(frozen=True)
class ModelTarget:
    """What to serve: a stage, an alias or a pinned version of one registered model."""

    name: str
    stage: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelTarget:
        if not settings.model_uri:
            return cls(settings.registered_model_name(), stage=settings.model_stage)
        return cls.parse(settings.model_uri)

    @classmethod
    def parse(cls, uri: str) -> ModelTarget:
        match = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/([^/@]+))", uri.strip())
        if not match:
            raise ConfigError(
                f"model_uri '{uri}': expected models:/NAME@ALIAS, models:/NAME/STAGE "
                "or models:/NAME/VERSION"
            )
        name, alias, rest = match.groups()
        if alias:
            return cls(name, alias=alias)
        if rest.isdigit():
            return cls(name, version=rest)
        return cls(name, stage=rest)

    def describe(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version or self.stage}"


@dataclass(frozen=True)
class VersionRef:
    """What the registry says the target points at now (one cheap call per poll)."""

    name: str
    version: str
    run_id: str | None
    stage: str | None
    aliases: tuple[str, ...] = ()
    status: str = "READY"

    def alias_for(self, target: ModelTarget) -> str | None:
        """The alias this version is served under: the followed one if it carries it, else
        the first it carries, so a label never names an alias the registry moved away."""
        if target.alias and target.alias in self.aliases:
            return target.alias
        return min(self.aliases) if self.aliases else None
