"""Splitting manifest files into YAML documents (``files`` finds them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import yaml

from fsmfast.config.issues import Issues, Where

# The libyaml parser is several times faster; the pure-Python one gives the same results.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """Safe loader that records duplicate mapping keys instead of silently keeping the last.

    kubectl rejects them ("mapping key already defined"); PyYAML would drop the first value,
    so a repeated ``spec:`` would lose half an object without a word.
    """

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                self.duplicates.append(f"duplicate key {key!s} at line {line} (first at line {first})")
            else:
                seen[key] = line
        # The base is picked at import (CSafeLoader or SafeLoader), so the checker sees Any.
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


class Document(msgspec.Struct, frozen=True):
    file: str
    doc: int  # 1-based within its file
    data: Any  # None for an empty document
    duplicates: list[str] = []




def read(file: str, issues: Issues) -> bytes | None:
    try:
        with open(file, "rb") as fh:
            return fh.read()
    except OSError as exc:
        issues.error(Where(file, 0), "", f"cannot read: {exc.strerror}")
        return None


def documents(file: str, data: bytes, issues: Issues) -> Iterator[Document]:
    """Yield every document of a multi-document YAML file, empty ones included.

    A syntax error is reported against the document it occurs in and ends the file: the YAML
    after it cannot be trusted to split into the documents the user meant.
    """
    loader = _Loader(data)
    number = 0
    # check_data() reads ahead into the next document, get_data() inside the current one:
    # this tells which document a syntax error belongs to.
    current = 1
    try:
        while loader.check_data():
            number += 1
            current = number
            loader.duplicates = []
            value = loader.get_data()
            current = number + 1
            yield Document(file, number, value, list(loader.duplicates))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        issues.error(Where(file, current), "", f"YAML syntax error{where}: {problem}")
    except yaml.YAMLError as exc:  # e.g. a ReaderError for bytes that are not UTF-8/16
        issues.error(Where(file, current), "", f"YAML error: {str(exc).splitlines()[0]}")
    finally:
        loader.dispose()
