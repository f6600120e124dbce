"""The master's builds run in a forked child: the same result as an in-process build, every way a
build can fail reported as data, and the master's signals kept for the master."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fsmfast import compile as compile_mod
from fsmfast.errors import ConfigError
from fsmfast.master import forked_build
from fsmfast.snapshot import decode, encode
from tests.support.manifests import write_founding


@pytest.fixture
def founding(tmp_path: Path) -> str:
    return str(write_founding(tmp_path / "founding", gateway_port=8000, upstream_port=9443))


def test_same_result_as_an_in_process_build(founding: str) -> None:
    expected = compile_mod.build(founding, 7)
    out = forked_build.build(founding, 7)
    assert not (out.errors or out.unreadable or out.crash), out
    assert out.snapshot == encode(expected.snapshot)
    assert decode(out.snapshot).generation == 7
    assert out.schemes == {listener.port: listener.protocol.lower() for listener in expected.snapshot.listeners}
    assert out.ports == {8000}
    assert out.warnings == expected.warnings and out.summary == expected.summary


def test_config_errors_come_back_as_the_issues_text(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: 7\n")
    with pytest.raises(ConfigError) as info:
        compile_mod.build(str(bad))
    out = forked_build.build(str(bad), 1)
    assert out.errors == [str(issue) for issue in info.value.issues] and out.errors
    assert out.snapshot == b"" and not out.crash


def test_os_error_is_reported_as_unreadable(monkeypatch: pytest.MonkeyPatch, founding: str) -> None:
    def unreadable(path: str, generation: int = 1) -> compile_mod.Build:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(compile_mod, "build", unreadable)  # the child is a fork: it sees the patch
    out = forked_build.build(founding, 1)
    assert out.unreadable == "Permission denied" and out.snapshot == b""


def test_a_compiler_bug_comes_back_with_its_traceback(monkeypatch: pytest.MonkeyPatch, founding: str) -> None:
    def buggy(path: str, generation: int = 1) -> compile_mod.Build:
        raise RuntimeError("compiler bug")

    monkeypatch.setattr(compile_mod, "build", buggy)
    out = forked_build.build(founding, 1)
    assert "RuntimeError: compiler bug" in out.crash and "Traceback" in out.crash
    assert out.snapshot == b"" and not out.errors


def test_a_killed_build_is_reported(monkeypatch: pytest.MonkeyPatch, founding: str) -> None:
    def killed(path: str, generation: int = 1) -> compile_mod.Build:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    monkeypatch.setattr(compile_mod, "build", killed)
    out = forked_build.build(founding, 1)
    assert out.crash == "the build process was killed by SIGKILL; perhaps out of memory?"


def test_the_masters_signals_stay_blocked_in_the_child(monkeypatch: pytest.MonkeyPatch, founding: str) -> None:
    # A SIGHUP (default action: terminate) raised during the build must not kill the child when the
    # master's signals are blocked, and the caller's signal mask is what it was afterwards.
    real = compile_mod.build

    def hup_then_build(path: str, generation: int = 1) -> compile_mod.Build:
        os.kill(os.getpid(), signal.SIGHUP)
        return real(path, generation)

    monkeypatch.setattr(compile_mod, "build", hup_then_build)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with_block = forked_build.build(founding, 1, (signal.SIGHUP,))
    assert not with_block.crash and with_block.snapshot
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        without = forked_build.build(founding, 1)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert without.crash == "the build process was killed by SIGHUP"
