"""``fsmfast run --watch``: an edit of the config file reloads without SIGHUP; a broken edit keeps serving.

The config is a directory whose file is replaced the way editors save (a temporary file renamed over
it). What the gateway serves is told by the upstream's name in its echo; the failure counter is read
from the admin listener's /metrics.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow


def served_by(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/who", timeout=5) as resp:
        return str(json.loads(resp.read())["upstream"])


def reload_failures(gw: Gateway) -> float:
    """fsmfast_config_reloads_total{result="failure"}, summed over its other labels; 0 when not exported yet."""
    text = gw.admin("/metrics")[1].decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"fsmfast_config_reloads_total\{([^}]*)\} (\S+)", line)
        if m and 'result="failure"' in m.group(1):
            total += float(m.group(2))
    return total


def save(path: Path, text: str) -> None:
    """As an editor saves: a temporary file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def test_watch_follows_edits_and_survives_a_broken_one(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    port = free_port()
    with Upstream("a", echo_all=True) as a, Upstream("b", echo_all=True) as b:
        gw_file = manifests.one_route(cfg / "gw.yaml", port, a.port)
        with Gateway(cfg, [port], args=["--watch"]) as gw:
            assert served_by(port) == "a"

            save(gw_file, manifests.one_route(tmp_path / "next.yaml", port, b.port).read_text())
            wait_for(lambda: served_by(port) == "b", 10, "the edit to be served")
            log = gw.stderr_text()
            assert "SIGHUP" not in log
            assert re.search(r"reloaded: generation 2\b", log), log

            before = reload_failures(gw)
            offset = len(gw.stderr_text())
            good = gw_file.read_text()
            save(gw_file, good.replace("kind: HTTPRoute", "kind: HTTPRoute\nspec: {parentRefs: [{name: 7"))
            wait_for(lambda: "reload failed" in gw.stderr_text()[offset:], 10, "the broken edit to be refused")
            assert "YAML syntax error" in gw.stderr_text()[offset:]
            wait_for(lambda: reload_failures(gw) == before + 1, 5, "the failure to be counted")
            assert served_by(port) == "b"  # generation 2 still serves

            # Fixing the file reloads again; saving the same bytes once more does not.
            save(gw_file, manifests.one_route(tmp_path / "next.yaml", port, a.port).read_text())
            wait_for(lambda: served_by(port) == "a", 10, "the fix to be served")
            reloads = gw.stderr_text().count("reloaded: generation")
            os.utime(gw_file)
            save(gw_file, gw_file.read_text())
            with pytest.raises(TimeoutError):
                wait_for(lambda: gw.stderr_text().count("reloaded: generation") > reloads, 1.5, "no reload")
