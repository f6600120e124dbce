"""Decode one parsed YAML value into a model Struct, reporting every problem with its path.

``msgspec.convert`` stops at the first error and can only reject unknown fields, while users
need all errors at once and only a warning for an unknown (probably misspelt) field. So this
walks the type tree that ``msgspec.inspect`` derives from the model Structs instead.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import json
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from fsmfast.config.issues import Issues, Where

T = TypeVar("T", bound=msgspec.Struct)


class _Bad:
    """Marker for a value that failed; its errors are already reported."""


BAD = _Bad()


@functools.cache
def _info(cls: type[msgspec.Struct]) -> mi.StructType:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


def describe(value: object) -> str:
    """A YAML-ish rendering of a wrong value, short enough for one line."""
    if isinstance(value, str):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return type(value).__name__


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class Decoder:
    def __init__(self, where: Where, issues: Issues) -> None:
        self.where = where
        self.issues = issues
        self.failed = False

    def error(self, path: str, message: str) -> None:
        self.failed = True
        self.issues.error(self.where, path, message)

    def struct(self, raw: object, cls: type[T], path: str, extra: dict[str, Any] | None = None) -> T | _Bad:
        value: T | _Bad = self._struct(raw, _info(cls), path, extra)
        return value

    def _struct(self, raw: object, info: mi.StructType, path: str, extra: dict[str, Any] | None = None) -> Any:
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping, got {describe(raw)}")
            return BAD
        cls: Any = info.cls
        fields = {f.encode_name: f for f in info.fields if f.name not in cls.internal}
        kwargs: dict[str, Any] = dict(extra or {})
        bad = False
        for key, value in raw.items():
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                if cls.strict and key not in cls.ignored:
                    self._unknown(join(path, key), str(key), fields)
                continue
            if value is None:
                # null means absent in Kubernetes (and is what an empty YAML value gives).
                continue
            decoded = self._value(value, field.type, join(path, key))
            if decoded is BAD:
                bad = True
            else:
                kwargs[field.name] = decoded
        for field in info.fields:
            if field.required and field.name not in kwargs and raw.get(field.encode_name) is None:
                self.error(join(path, field.encode_name), "required")
                bad = True
        return BAD if bad else cls(**kwargs)

    def _unknown(self, path: str, key: str, fields: dict[str, Any]) -> None:
        close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.issues.warn(self.where, path, f"unknown field, ignored{hint}")

    def _value(self, raw: object, t: mi.Type, path: str) -> Any:
        if isinstance(t, mi.AnyType):
            return raw
        if isinstance(t, mi.StructType):
            return self._struct(raw, t, path)
        if isinstance(t, mi.UnionType):
            return self._union(raw, t, path)
        if isinstance(t, mi.IntType):
            return self._int(raw, t, path)
        if isinstance(t, mi.FloatType):
            return self._float(raw, t, path)
        if isinstance(t, mi.StrType):
            if isinstance(raw, str):
                return raw
            self.error(path, f"expected a string, got {describe(raw)}")
            return BAD
        if isinstance(t, mi.BoolType):
            if isinstance(raw, bool):
                return raw
            self.error(path, f"expected true or false, got {describe(raw)}")
            return BAD
        if isinstance(t, mi.LiteralType):
            if raw in t.values and isinstance(raw, str):
                return raw
            self.error(path, f"must be one of {', '.join(map(str, t.values))}; got {describe(raw)}")
            return BAD
        if isinstance(t, mi.ListType):
            return self._list(raw, t, path)
        if isinstance(t, mi.DictType):
            return self._dict(raw, t, path)
        if isinstance(t, mi.NoneType):
            self.error(path, f"expected null, got {describe(raw)}")
            return BAD
        raise TypeError(f"model type {t!r} not handled by the decoder")

    def _int(self, raw: object, t: mi.IntType, path: str) -> int | _Bad:
        if not isinstance(raw, int) or isinstance(raw, bool):
            self.error(path, f"expected an integer, got {describe(raw)}")
            return BAD
        if (t.ge is not None and raw < t.ge) or (t.le is not None and raw > t.le):
            if t.ge is not None and t.le is not None:
                self.error(path, f"must be between {t.ge} and {t.le}, got {raw}")
            elif t.ge is not None:
                self.error(path, f"must be at least {t.ge}, got {raw}")
            else:
                self.error(path, f"must be at most {t.le}, got {raw}")
            return BAD
        return raw

    def _float(self, raw: object, t: mi.FloatType, path: str) -> float | _Bad:
        # YAML writes 2 for 2.0: an integer is a number too (FSM's float32 seconds and ratios).
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            self.error(path, f"expected a number, got {describe(raw)}")
            return BAD
        if (t.ge is not None and raw < t.ge) or (t.le is not None and raw > t.le):
            if t.ge is not None and t.le is not None:
                self.error(path, f"must be between {t.ge:g} and {t.le:g}, got {raw:g}")
            elif t.ge is not None:
                self.error(path, f"must be at least {t.ge:g}, got {raw:g}")
            else:
                self.error(path, f"must be at most {t.le:g}, got {raw:g}")
            return BAD
        return float(raw)

    def _list(self, raw: object, t: mi.ListType, path: str) -> list[Any] | _Bad:
        if not isinstance(raw, list):
            self.error(path, f"expected a list, got {describe(raw)}")
            return BAD
        out = [self._value(item, t.item_type, f"{path}[{i}]") for i, item in enumerate(raw)]
        return BAD if any(item is BAD for item in out) else out

    def _dict(self, raw: object, t: mi.DictType, path: str) -> dict[str, Any] | _Bad:
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping, got {describe(raw)}")
            return BAD
        out: dict[str, Any] = {}
        bad = False
        for key, value in raw.items():
            if not isinstance(key, str):
                self.error(join(path, key), f"keys must be strings, got {describe(key)}")
                bad = True
                continue
            decoded = self._value(value, t.value_type, join(path, key))
            if decoded is BAD:
                bad = True
            else:
                out[key] = decoded
        return BAD if bad else out

    def _union(self, raw: object, t: mi.UnionType, path: str) -> Any:
        # Only the unions the model uses: X | None and int | str (Kubernetes IntOrString).
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if raw is None and len(members) < len(t.types):
            return None
        if len(members) == 1:
            return self._value(raw, members[0], path)
        for member in members:
            if isinstance(member, mi.IntType) and isinstance(raw, int) and not isinstance(raw, bool):
                return self._int(raw, member, path)
            if isinstance(member, mi.StrType) and isinstance(raw, str):
                return raw
        self.error(path, f"expected an integer or a string, got {describe(raw)}")
        return BAD


def decode(
    raw: object, cls: type[T], where: Where, issues: Issues, path: str = "", extra: dict[str, Any] | None = None
) -> T | None:
    """Decode ``raw`` as ``cls``; None when it had errors (all of them reported to ``issues``)."""
    decoder = Decoder(where, issues)
    value = decoder.struct(raw, cls, path, extra)
    if isinstance(value, _Bad) or decoder.failed:
        return None
    return value
