"""Error-log setup shared by the master and the workers.

Everything goes to stderr, one line per record, prefixed with the process role and pid
(``[master 812]``, ``[worker 2 815]``) so the interleaved output of a prefork server says
who spoke. The access log is the workers' business and does not pass through here.

Workers call :func:`setup` again right after the fork: the handler is inherited, only
the role changes. ``%(process)d`` is read when each record is made, so it is always the
current pid.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "fsmfast"
FORMAT = "%(asctime)s [%(role)s %(process)d] %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"

_role = "fsmfast"


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


def setup(role: str, level: int = logging.INFO) -> logging.Logger:
    """Point the ``fsmfast`` logger at stderr with a ``[role pid]`` prefix; call again after a fork."""
    global _role
    _role = role
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_fsmfast", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._fsmfast = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.addFilter(_RoleFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    # An embedding application's root handlers would print every line twice.
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the ``fsmfast`` logger, e.g. ``get_logger("master")`` → ``fsmfast.master``."""
    return logging.getLogger(f"{LOGGER}.{name}")
