"""The states of an ``Exchange`` (see fsmfast.proxy.exchange for the machine) and its parser stop.

A module of their own: the compiled client and exchange modules need each other's types
while they initialize, so neither may need the other's module body to have run.
"""

from __future__ import annotations

QUEUED, CONNECTING, SENDING, RESPONDING, DONE = range(5)


class StopParsing(Exception):
    """Raised from a parser callback once the exchange has answered for itself (a 413)."""
