"""The shared part of the before/after benchmarks (``ab_latency.py``, ``ase_md_ab.py``): an older commit
checked out beside the working tree, and one child Python process run against either tree.

Each measurement runs in its own process with ``PYTHONPATH`` set to the tree being measured (the child
should assert that ``jace`` came from there), from a temporary directory, so the two trees never share
imported code.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def old_tree(rev: str) -> Iterator[str]:
    """Path of a temporary ``git worktree`` of ``rev`` (detached), removed on exit."""
    path = tempfile.mkdtemp(prefix="jace_ab_")
    out = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", path, rev], check=False,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"git worktree add {rev}: {out.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path], check=False, capture_output=True)
        subprocess.run(["git", "-C", ROOT, "worktree", "prune"], check=False, capture_output=True)


def run_child(root: str, code: str, *args: str) -> str:
    """stdout of ``python -c code root *args`` with ``PYTHONPATH=root``; raises with the child's stderr."""
    out = subprocess.run([sys.executable, "-c", code, root, *args], check=False, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, cwd=tempfile.gettempdir())
    if out.returncode:
        raise RuntimeError(f"{root} {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout
