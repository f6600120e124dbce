"""Which files a config path names: kept apart from ``sources`` so that the master's file watch
(``fsmfast.master.watch``) can ask without importing the YAML parser, which its forked workers
would otherwise map too (workers never read YAML)."""

from __future__ import annotations

import os

from fsmfast.config.issues import Issues, Where

__all__ = ["find_files"]


def find_files(path: str, issues: Issues) -> list[str]:
    """The manifest files for ``path``: the file itself, or a directory's YAML files.

    Names keep the user's spelling (relative stays relative) so messages point at what they typed.
    """
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            issues.error(Where(path, 0), "", f"cannot list directory: {exc.strerror}")
            return []
        files = [
            os.path.join(path, name)
            for name in names
            if not name.startswith(".")
            and not name.endswith("~")
            and name.endswith((".yaml", ".yml"))
            and os.path.isfile(os.path.join(path, name))
        ]
        if not files:
            issues.error(Where(path, 0), "", "no *.yaml or *.yml files in this directory")
        return files
    if not os.path.exists(path):
        issues.error(Where(path, 0), "", "no such file or directory")
        return []
    return [path]
