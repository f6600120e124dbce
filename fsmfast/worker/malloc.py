"""glibc malloc settings for a worker that streams large bodies.

Every read of a big body hands the protocol a fresh bytes object of up to 256 KiB (uvloop's
read buffer), and the transports copy what the socket does not take at once. With glibc's
defaults such blocks sit at the top of the heap: freeing one gives the memory back to the
kernel (``brk``) and the next read faults it in again, page by page. Measured on S5 (1 MiB
responses): about 1,700 ``brk`` calls per second and a quarter of the worker's CPU in page
faults and their zeroing.

Keeping a few MiB at the top of the heap instead costs that much RSS at most, once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("fsmfast.worker")

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# Free memory kept at the top of the heap before it goes back to the kernel.
TRIM_THRESHOLD = 16 * 1024 * 1024
# Extra heap asked for on each growth, so one growth covers several buffers.
TOP_PAD = 4 * 1024 * 1024
# Blocks from this size up are mmap()ed on their own (and unmapped when freed): above a body
# buffer, below anything a proxy should hold in one piece. Setting it also fixes the trim
# threshold, which glibc would otherwise move with the largest block freed.
MMAP_THRESHOLD = 4 * 1024 * 1024


def tune() -> bool:
    """Applies the settings when the C library is glibc; returns whether it did."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt): its allocator, its defaults
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    if not done:
        log.warning("mallopt refused the worker's malloc settings; large bodies will cost more CPU")
    return done
