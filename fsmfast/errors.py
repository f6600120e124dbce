"""Exceptions that cross module boundaries, and the process exit codes.

Exit codes follow gunicorn/nginx habits: 0 ok, 1 config invalid, 2 usage,
3 worker boot failure (the master stops instead of respawning in a loop), 4 bind failure.
"""

from __future__ import annotations

import msgspec

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_WORKER_BOOT = 3
EXIT_BIND = 4


class ConfigIssue(msgspec.Struct, frozen=True):
    """One problem in the manifests, located precisely enough to fix without guessing.

    Rendered as ``routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].port: required``
    where ``#2`` is the 1-based index of the YAML document in its file.
    """

    file: str
    doc: int
    kind: str
    name: str  # "namespace/name", or "" when the document has no usable metadata
    field: str  # dotted path with [i] indexes; "" for the whole document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}#{self.doc}"
        if self.kind:
            where += f" {self.kind}"
        if self.name:
            where += f" {self.name}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}"


class ConfigError(Exception):
    """The manifests are invalid; ``issues`` lists every error found, not just the first."""

    def __init__(self, issues: list[ConfigIssue] | list[str]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))
