"""Upstream resilience at run time (issue 19): health, circuit breaking, retries, sessions, each in its own
module, reading and writing the machine-wide arena (``fsmfast.shared``). Only backends with a policy use them."""
