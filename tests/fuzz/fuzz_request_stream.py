"""Coverage-guided fuzzing of the request parser and header rewriter with atheris (optional).

Not part of the test suite (pytest does not collect it): a long run looking for a byte stream
that breaks the invariant the suite checks with hypothesis (``tests/unit/test_fuzz_framing.py``):
whatever reaches an upstream is complete, framed once, and byte for byte a request the gateway
parsed. Each input is a client byte stream; its first byte chooses how it is cut into reads.

    pip install atheris          # a wheel for CPython 3.11 on x86_64 Linux; see its README for others
    python tests/fuzz/fuzz_request_stream.py -max_total_time=600 tests/fuzz/corpus
    FSMFAST_NO_EXTENSIONS=1 python tests/fuzz/fuzz_request_stream.py -runs=200000   # the pure twin

The directory argument (libFuzzer's corpus) is optional; ``tests/requests/*.http`` make good seeds:
``mkdir -p /tmp/seeds && cp tests/requests/*.http /tmp/seeds``. A crash or failed invariant
stops the run and leaves ``crash-<sha1>`` with the input; replay it with the same command plus
the file name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    import fsmfast.codec.http1
    import fsmfast.proxy.downstream
    import fsmfast.proxy.paths  # noqa: F401
    from tests.support.memproxy import MemoryProxy, check_framing


def one_input(data: bytes) -> None:
    if not data:
        return
    step = data[0] % 64 + 1
    stream = data[1:]
    proxy = MemoryProxy(upstream_connections=16)
    try:
        for i in range(0, len(stream), step):
            proxy.feed(stream[i : i + step])
        check_framing(proxy)
    finally:
        proxy.close()


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
