"""The Exchange state machine in-process: each path through fsmfast.proxy.states.TRANSITIONS.

A real ``ClientConnection`` and ``UpstreamConnection`` objects on in-memory transports
(tests.support.memproxy), the test playing the upstream; the stale-pool retry opens a real
loopback connection. Every transition is checked against the table (``check_states``) and
recorded, and each test asserts the path its exchanges took, besides what the client read.
``make test`` runs this file over the compiled modules and again over the pure-Python twins
(FSMFAST_NO_EXTENSIONS=1).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmfast._compiled import EXTENSIONS_OFF, compiled_modules
from fsmfast.proxy import exchange, states
from fsmfast.proxy.states import NAMES, RESPONDING, TRANSITIONS, StateError
from tests.support.memproxy import MemoryProxy

PROXY = Path(exchange.__file__).resolve().parent
NORMAL = "QUEUED -upstream_ready-> SENDING -response_head-> RESPONDING -response_complete-> DONE"


class Paths:
    """The transitions each exchange took, in the order the exchanges first moved."""

    def __init__(self) -> None:
        self.exchanges: list[object] = []  # kept alive, so no id is reused during a test
        self.paths: dict[int, str] = {}

    def __call__(self, ex: object, state: int, event: str, to: int) -> None:
        if id(ex) not in self.paths:
            self.exchanges.append(ex)
            self.paths[id(ex)] = NAMES[state]
        self.paths[id(ex)] += f" -{event}-> {NAMES[to]}"

    def __iter__(self) -> Iterator[str]:
        return (self.paths[id(ex)] for ex in self.exchanges)

    def all(self) -> list[str]:
        return list(self)


@pytest.fixture
def paths() -> Iterator[Paths]:
    before = states.CHECK_STATES
    exchange.check_states(True)
    recorder = Paths()
    states.watchers.append(recorder)
    try:
        yield recorder
    finally:
        states.watchers.remove(recorder)
        exchange.check_states(before)


@pytest.fixture
def proxy() -> Iterator[MemoryProxy]:
    p = MemoryProxy(upstream_connections=4, auto_answer=False)
    try:
        yield p
    finally:
        p.close()


def test_the_twin_under_test_is_the_one_asked_for() -> None:
    # Over both twins: compiled unless FSMFAST_NO_EXTENSIONS=1 (then the .py runs interpreted).
    if EXTENSIONS_OFF:
        assert exchange.__file__.endswith(".py") and not compiled_modules()
    elif "fsmfast.proxy.exchange" not in compiled_modules():
        pytest.skip("the compiled modules are not built in place (make inplace)")
    else:
        assert not exchange.__file__.endswith(".py")


def test_pipelined_requests_wait_in_queued_and_answer_in_order(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.target for r in proxy.received(0)] == [b"/a"]  # one at a time: /b waits
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING"]
    assert [ex.state for ex in proxy.client.queue] == [states.SENDING, states.QUEUED]
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    # /b went on the connection /a gave back (the pool's warmest).
    assert [r.target for r in proxy.received(0)] == [b"/a", b"/b"]
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    out = proxy.client_output()
    assert out.index(b"first") < out.index(b"second")
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert paths.all() == [NORMAL, NORMAL]


def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.listen(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.target for r in proxy.received(0)] == [b"/a"]
    proxy.lose(0)  # the server had closed it: no byte of a response
    proxy.run_until(lambda: b"fresh" in proxy.client_output())
    assert proxy.client_output().startswith(b"HTTP/1.1 200 OK\r\n")
    assert paths.all() == [
        "QUEUED -upstream_ready-> SENDING -retry-> CONNECTING -upstream_ready-> SENDING"
        " -response_head-> RESPONDING -response_complete-> DONE"
    ]


def test_a_stale_connection_is_not_retried_after_response_bytes(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200")  # part of a head: the server did answer
    proxy.lose(0)
    assert proxy.client_output().startswith(b"HTTP/1.1 502 ")
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -reply-> DONE"]


def test_expect_100_continue_is_answered_before_the_body(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert proxy.client_output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proxy.feed(b"hello")
    assert [(r.target, r.body, r.complete) for r in proxy.received(0)] == [(b"/up", b"hello", True)]
    proxy.respond(0, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert proxy.client_output().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")
    assert paths.all() == [NORMAL]


def test_head_ends_at_the_response_head_and_does_not_reuse_the_connection(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    out = proxy.client_output()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5\r\n" in out
    assert out.endswith(b"\r\n\r\n")  # no body
    assert proxy.upstreams[0][1].closed  # a server that wrongly sent a body would poison the next
    assert paths.all() == [NORMAL]


def test_a_close_delimited_body_ends_at_the_upstream_eof(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhel")
    proxy.respond(0, b"lo")
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -response_head-> RESPONDING"]
    proxy.lose(0)
    out = proxy.client_output()
    # Re-framed chunked for an HTTP/1.1 client, so its end is explicit.
    assert b"Transfer-Encoding: chunked" in out and out.endswith(b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
    assert not proxy.client_t.closed
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -response_head-> RESPONDING -upstream_eof-> DONE"]


def test_a_chunked_body_over_the_limit_gets_413_and_the_upstream_is_cut(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"POST /limited HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    proxy.feed(b"40\r\n" + b"x" * 64 + b"\r\n")
    proxy.feed(b"1\r\ny\r\n")
    assert proxy.client_output().startswith(b"HTTP/1.1 413 ")
    assert proxy.upstreams[0][1].closed
    assert not any(r.complete for r in proxy.received(0))  # never a whole request upstream
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -reply-> DONE"]


def test_a_declared_length_over_the_limit_is_a_local_reply(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n")
    assert proxy.client_output().startswith(b"HTTP/1.1 413 ")
    assert proxy.received(0) == []
    assert paths.all() == ["QUEUED -reply-> DONE"]


def test_the_response_timeout_answers_504_before_the_head(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    ex = proxy.client.queue[0]
    ex.deadline = 1.0  # long past: the worker's next tick finds it
    proxy.ctx._tick()
    assert proxy.client_output().startswith(b"HTTP/1.1 504 ")
    assert proxy.upstreams[0][1].closed
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -reply-> DONE"]


def test_the_response_timeout_aborts_mid_body(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    ex = proxy.client.queue[0]
    ex.deadline = 1.0
    proxy.ctx._tick()
    assert proxy.client_t.closed  # a cut body must not pass for a whole one
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -response_head-> RESPONDING -abort-> DONE"]


def test_a_client_that_leaves_ends_the_exchange(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.client.connection_lost(None)
    assert proxy.upstreams[0][1].closed
    assert paths.all() == ["QUEUED -upstream_ready-> SENDING -client_lost-> DONE"]


def test_a_transition_outside_the_table_is_refused(proxy: MemoryProxy, paths: Paths) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    ex = proxy.client.queue[0]
    assert ex.state == RESPONDING
    # A local reply after the response head went out would corrupt the stream: never in the table.
    with pytest.raises(StateError, match="RESPONDING --reply--> DONE"):
        ex.reply(502, "late", "bug")
    assert ex.state == RESPONDING


def test_the_diagram_in_the_docstring_is_the_table() -> None:
    doc = ast.get_docstring(ast.parse((PROXY / "exchange.py").read_text())) or ""
    assert states.diagram() in doc
    listed = re.findall(r"^\s+([A-Z]+)\s+--(\w+)-*--> ([A-Z]+)$", doc, re.M)
    assert sorted(listed) == sorted((NAMES[s], e, NAMES[t]) for (s, e), t in TRANSITIONS.items())


def test_every_transition_the_code_takes_is_in_the_table_and_back() -> None:
    """Each ``self.state = X`` (and the tunnel's ``ex.state = DONE``) follows its check, each method that
    finishes the exchange (``_finish`` sets DONE for its callers) checks its own move, and the checks
    name exactly the table's (event, next state) pairs."""
    taken = set()
    for name in ("exchange.py", "websocket.py"):
        source = (PROXY / name).read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef) or node.name == "_finish":
                continue
            body = ast.get_source_segment(source, node) or ""
            lines = body.splitlines()
            for n, line in enumerate(lines):
                m = re.fullmatch(r"\s+\w+\.state = (\w+)", line)
                if m and m.group(1) != "QUEUED":  # QUEUED: the start, not a transition
                    assert "transition(" in lines[n - 1], f"{name}: {node.name}: `{line.strip()}` is not checked"
            if "self._finish()" in body:
                assert "transition(" in body, f"{name}: {node.name} finishes the exchange unchecked"
        for check in re.finditer(r"transition\(\w+, [\w.]+, \"(\w+)\", (\w+)\)", source):
            taken.add((check.group(1), check.group(2)))
    assert taken == {(event, NAMES[to]) for (_, event), to in TRANSITIONS.items()}
