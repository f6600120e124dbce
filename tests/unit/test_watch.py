"""fsmfast.master.watch: real inotify on a temporary directory, the ways configs really change."""

from __future__ import annotations

import os
import select
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsmfast.master.watch import Watcher

SETTLE = 0.1


def reloads(w: Watcher, seconds: float, action: Callable[[], None] | None = None, read: bool = True) -> int:
    """Run the master's side for ``seconds`` (select, on_readable, due) after ``action``; count dues."""
    if action is not None:
        action()
    count = 0
    end = time.monotonic() + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            return count
        wait = min(w.timeout(now), end - now)
        if read:
            ready, _, _ = select.select([w.fileno()], [], [], wait)
            if ready:
                w.on_readable()
        else:
            time.sleep(wait)
        count += w.due(time.monotonic())


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "gw.yaml").write_text("kind: Gateway\n")
    (d / "routes.yaml").write_text("kind: HTTPRoute\n")
    return d


@pytest.fixture
def watcher(cfg: Path) -> Iterator[Watcher]:
    w = Watcher(str(cfg), settle=SETTLE)
    yield w
    w.close()


def test_nothing_happens_nothing_is_due(watcher: Watcher) -> None:
    assert reloads(watcher, 0.3) == 0


def test_editor_save_tmp_and_rename(cfg: Path, watcher: Watcher) -> None:
    def save() -> None:
        tmp = cfg / ".gw.yaml.swp"
        tmp.write_text("kind: Gateway\nmetadata: {name: b}\n")
        os.rename(tmp, cfg / "gw.yaml")

    assert reloads(watcher, 0.5, save) == 1
    # The new content is now the served one: appending to the renamed file is seen too (a watch on
    # the old file's inode would have missed it).
    assert reloads(watcher, 0.5, lambda: _append(cfg / "gw.yaml", "# more\n")) == 1


def test_a_reload_by_signal_is_not_repeated(cfg: Path, watcher: Watcher) -> None:
    # The edit, then a SIGHUP reload before the edit settled: the master tells the watcher, which then
    # has nothing left to reload.
    def edit_then_sighup() -> None:
        _append(cfg / "routes.yaml", "# edited\n")
        watcher.reloaded()

    assert reloads(watcher, 0.5, edit_then_sighup) == 0
    assert reloads(watcher, 0.5, lambda: _append(cfg / "routes.yaml", "# again\n")) == 1


def test_in_place_append(cfg: Path, watcher: Watcher) -> None:
    assert reloads(watcher, 0.5, lambda: _append(cfg / "routes.yaml", "# edited\n")) == 1


def test_touch_or_same_bytes_do_not_reload(cfg: Path, watcher: Watcher) -> None:
    def touch() -> None:
        os.utime(cfg / "gw.yaml")
        (cfg / "routes.yaml").write_text("kind: HTTPRoute\n")  # same bytes again
        (cfg / ".gw.yaml.swp").write_text("an editor's swap file")  # not an input
        (cfg / "notes.txt").write_text("not yaml")

    assert reloads(watcher, 0.5, touch) == 0


def test_burst_of_writes_reloads_once(cfg: Path) -> None:
    # A longer quiet time than the other tests: a busy machine must not stretch a 20 ms gap past it.
    w = Watcher(str(cfg), settle=0.3)

    def burst() -> None:
        for i in range(15):
            (cfg / "routes.yaml").write_text(f"kind: HTTPRoute\n# {i}\n")
            time.sleep(0.02)

    # Written while the master's side runs, so the events are read as they come, not all at once.
    writer = threading.Thread(target=burst)
    try:
        assert reloads(w, 1.2, writer.start) == 1
    finally:
        writer.join()
        w.close()


def test_new_and_removed_files(cfg: Path, watcher: Watcher) -> None:
    assert reloads(watcher, 0.4, lambda: (cfg / "more.yml").write_text("kind: Service\n")) == 1
    assert reloads(watcher, 0.4, lambda: (cfg / "more.yml").unlink()) == 1


def _configmap(root: Path, stamp: str, text: str) -> None:
    """A ConfigMap volume as the kubelet writes it: files in a timestamped directory, a ``..data``
    symlink to it swapped by rename, and user-visible names that link through ``..data``."""
    data = root / f"..{stamp}"
    data.mkdir()
    (data / "gw.yaml").write_text(text)
    tmp = root / "..data_tmp"
    os.symlink(data.name, tmp)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.rename(tmp, root / "..data")
    if not (root / "gw.yaml").is_symlink():
        os.symlink("..data/gw.yaml", root / "gw.yaml")
    if old is not None:
        shutil.rmtree(root / old)


@pytest.mark.parametrize("watch_file", [False, True], ids=["directory", "file"])
def test_configmap_data_symlink_swap(tmp_path: Path, watch_file: bool) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    _configmap(root, "2026_01_01_00_00_00.1", "kind: Gateway\n")
    w = Watcher(str(root / "gw.yaml" if watch_file else root), settle=SETTLE)
    try:
        assert w.inputs() == [str(root / "gw.yaml")]
        swap = lambda: _configmap(root, "2026_01_01_00_01_00.2", "kind: Gateway\n# v2\n")  # noqa: E731
        assert reloads(w, 0.5, swap) == 1
        # The old timestamped directory is gone (its watch with it); the next swap is seen as well.
        swap = lambda: _configmap(root, "2026_01_01_00_02_00.3", "kind: Gateway\n# v3\n")  # noqa: E731
        assert reloads(w, 0.5, swap) == 1
    finally:
        w.close()


def test_file_path_ignores_siblings(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("kind: Gateway\n")
    w = Watcher(str(tmp_path / "gw.yaml"), settle=SETTLE)
    try:
        assert reloads(w, 0.4, lambda: (tmp_path / "other.yaml").write_text("x: 1\n")) == 0
        assert reloads(w, 0.4, lambda: _append(tmp_path / "gw.yaml", "# edited\n")) == 1
    finally:
        w.close()


def test_subdirectories_are_watched(cfg: Path, watcher: Watcher) -> None:
    # The loader reads only the top level; a change below is an event, hashed and found the same.
    assert reloads(watcher, 0.4, lambda: (cfg / "sub").mkdir()) == 0
    assert str(cfg / "sub") in watcher.directories()
    assert reloads(watcher, 0.4, lambda: (cfg / "sub" / "x.yaml").write_text("kind: Service\n")) == 0
    assert len(watcher._wds) == 2


def test_poll_rehashes_without_events(cfg: Path) -> None:
    w = Watcher(str(cfg), settle=SETTLE, poll=0.2)
    try:
        # The events are never read: only the poll can find the change.
        assert reloads(w, 0.6, lambda: _append(cfg / "gw.yaml", "# polled\n"), read=False) == 1
    finally:
        w.close()


def test_directory_removed_and_back(cfg: Path) -> None:
    w = Watcher(str(cfg), settle=SETTLE, poll=0.3)
    try:

        def replace() -> None:
            shutil.rmtree(cfg)
            cfg.mkdir()
            (cfg / "gw.yaml").write_text("kind: Gateway\n# back\n")

        # IN_IGNORED drops the watch; the poll watches the new directory and finds the change.
        assert reloads(w, 1.0, replace) == 1
        assert w._wds
        assert reloads(w, 0.5, lambda: _append(cfg / "gw.yaml", "# edited\n")) == 1
    finally:
        w.close()


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)
