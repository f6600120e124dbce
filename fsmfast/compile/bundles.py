"""CA bundles: the ``ca.crt`` texts of several Secrets/ConfigMaps joined into the one PEM the data
plane loads, with a note of where each part came from (``PemSource``) so the admin listener and the
certificate expiry metrics can name the object a certificate lives in."""

from __future__ import annotations

from typing import Literal

from fsmfast.config import model as m
from fsmfast.snapshot import PemSource


class Bundle:
    """Texts in the order added; a text already in the bundle is not added twice (a trust store is
    a set, and the first object that supplied it is the one named)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[tuple[str, str, Literal["Secret", "ConfigMap"]]] = []

    def add(self, text: str, obj: m.Secret | m.ConfigMap) -> None:
        """Add ``text``, the ``ca.crt`` of ``obj``."""
        # Every part ends with a newline, so that the next part's BEGIN line starts a line.
        text = text if text.endswith("\n") else text + "\n"
        if all(text != t for t, _, _ in self._parts):
            self._parts.append((text, obj.key, "Secret" if isinstance(obj, m.Secret) else "ConfigMap"))

    def __bool__(self) -> bool:
        return bool(self._parts)

    @property
    def pem(self) -> str:
        return "".join(t for t, _, _ in self._parts)

    @property
    def sources(self) -> tuple[PemSource, ...]:
        out = []
        end = 0
        for text, name, kind in self._parts:
            end += len(text)
            out.append(PemSource(name=name, end=end, kind=kind))
        return tuple(out)
