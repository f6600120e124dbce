"""Collecting errors and warnings with their location, without stopping at the first one."""

from __future__ import annotations

import msgspec

from fsmfast.config.model import Object, Origin
from fsmfast.errors import ConfigIssue


class Where(msgspec.Struct, frozen=True):
    """The document (and object, once known) an issue belongs to."""

    file: str
    doc: int
    kind: str = ""
    name: str = ""
    prefix: str = ""

    @classmethod
    def of(cls, obj: Object) -> Where:
        return cls.at(obj.origin, obj.kind, display_name(obj))

    @classmethod
    def at(cls, origin: Origin, kind: str = "", name: str = "") -> Where:
        return cls(origin.file, origin.doc, kind, name, origin.prefix)


CLUSTER_SCOPED = frozenset({"GatewayClass", "Namespace"})


def display_name(obj: Object) -> str:
    return obj.name if obj.kind in CLUSTER_SCOPED else obj.key


class Issues:
    """Errors make the whole configuration invalid; warnings are reported and the rest is served."""

    def __init__(self) -> None:
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self._seen: set[ConfigIssue] = set()

    def _make(self, where: Where, field: str, message: str) -> ConfigIssue:
        if where.prefix:
            field = f"{where.prefix}.{field}" if field else where.prefix
        return ConfigIssue(where.file, where.doc, where.kind, where.name, field, message)

    def error(self, where: Where, field: str, message: str) -> None:
        issue = self._make(where, field, message)
        if issue not in self._seen:
            self._seen.add(issue)
            self.errors.append(issue)

    def warn(self, where: Where, field: str, message: str) -> None:
        issue = self._make(where, field, message)
        if issue not in self._seen:
            self._seen.add(issue)
            self.warnings.append(issue)

    def sorted(self, files: list[str]) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
        """Errors and warnings in file order, then document order; stable otherwise."""
        order = {name: i for i, name in enumerate(files)}

        def key(issue: ConfigIssue) -> tuple[int, int]:
            return order.get(issue.file, -1), issue.doc

        return sorted(self.errors, key=key), sorted(self.warnings, key=key)
