"""Builds a generation in a short-lived forked child, so the master's heap never holds a build.

Reading and compiling manifests allocates far more than it returns: YAML nodes, the validated
model, the snapshot before encoding. Freed, that memory stays resident in the master's half-used
allocator arenas, and every worker forked afterwards maps those pages too (bench S4, 10,000 rules:
about 5 MiB in the master and again in each worker). A child builds and exits; the master receives
only what it keeps: the encoded snapshot, what its listeners speak, the warnings and the summary.

The master's signals stay blocked in the child (the mask is inherited from the fork): a Ctrl-C
or a SIGHUP during a build reaches the master's queue once, as it did when the master built in
its own process. If the master dies, the kernel kills the child (PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterable

import msgspec

from fsmfast.errors import ConfigError
from fsmfast.master.children import describe_exit, die_with_parent

__all__ = ["Outcome", "build"]


class Outcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a build gives the master. Exactly one of ``snapshot``, ``errors``, ``unreadable`` and
    ``crash`` is set."""

    snapshot: bytes = b""  # the encoded Snapshot (fsmfast.snapshot.encode)
    schemes: dict[int, str] = {}  # port -> what its listeners speak ("http", "https", "tls", "tcp")
    warnings: list[str] = []
    summary: str = ""
    errors: list[str] = []  # the ConfigError's issues, "file#doc Kind ns/name: field: message"
    unreadable: str = ""  # the configuration could not be read (OSError)
    crash: str = ""  # anything else: the compiler's traceback, or how the child died

    @property
    def ports(self) -> set[int]:
        return set(self.schemes)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Outcome)


def build(path: str, generation: int, block: Iterable[signal.Signals] = ()) -> Outcome:
    """Build ``generation`` from the manifests at ``path`` in a child process.

    ``block``: signals to keep blocked in the child (the master's own; their handlers only queue).
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, block)
    master_pid = os.getpid()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
        return Outcome(crash=f"cannot fork a build process: {e.strerror or e}")
    if pid == 0:
        _child(path, generation, w, r, master_pid)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(w)
    with open(r, "rb") as pipe:
        data = pipe.read()  # to EOF: the child's exit, or its last write
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            return _decoder.decode(data)
        except msgspec.DecodeError as e:
            return Outcome(crash=f"the build process sent an unreadable result: {e}")
    return Outcome(crash=f"the build process {describe_exit(status)}")


def _child(path: str, generation: int, w: int, r: int, master_pid: int) -> None:
    """The child side of the fork: build, write the outcome, exit. Never returns."""
    code = 1
    try:
        os.close(r)
        die_with_parent(master_pid, signal.SIGKILL)
        with open(w, "wb") as pipe:
            pipe.write(_encoder.encode(_outcome(path, generation)))
        code = 0
    except BaseException:  # whatever happens, the child must not return into the master
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _outcome(path: str, generation: int) -> Outcome:
    from fsmfast.compile import build as compile_build
    from fsmfast.snapshot import encode

    try:
        result = compile_build(path, generation)
    except ConfigError as e:
        return Outcome(errors=[str(issue) for issue in e.issues])
    except OSError as e:
        return Outcome(unreadable=str(e.strerror or e))
    except Exception:  # a compiler bug must reach the master's log, not kill a reload
        return Outcome(crash=traceback.format_exc().rstrip())
    snapshot = result.snapshot
    return Outcome(
        snapshot=encode(snapshot),
        schemes={listener.port: listener.protocol.lower() for listener in snapshot.listeners},
        warnings=result.warnings,
        summary=result.summary,
    )
