"""The huge-page malloc switch of the ``jace`` command (``jace.hugepage_malloc``)."""

import os
import subprocess
import sys

import pytest

from jace import hugepage_malloc as hp


@pytest.mark.parametrize(
    "environ, mode, glibc, platform, tunables",
    [
        ({}, "madvise", (2, 36), "linux", "glibc.malloc.hugetlb=1"),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 35), "linux",
         "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),  # other tunables are kept
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), "linux", None),  # the user chose
        ({"JACE_HUGEPAGE_MALLOC": "0"}, "madvise", (2, 36), "linux", None),
        ({"JACE_HUGEPAGE_MALLOC": "Off"}, "madvise", (2, 36), "linux", None),
        ({}, "always", (2, 36), "linux", None),  # huge pages already
        ({}, "never", (2, 36), "linux", None),  # not possible
        ({}, None, (2, 36), "linux", None),
        ({}, "madvise", (2, 34), "linux", None),  # no such tunable
        ({}, "madvise", None, "linux", None),  # musl
        ({}, "madvise", (2, 36), "darwin", None),
    ],
)
def test_reexec_environment(environ, mode, glibc, platform, tunables):
    env = hp.reexec_environment(environ, mode, glibc, platform)
    if tunables is None:
        assert env is None
    else:
        assert env["GLIBC_TUNABLES"] == tunables
        assert hp.active(env) and not hp.active(environ)
        rest = lambda e: {k: v for k, v in e.items() if k != "GLIBC_TUNABLES"}  # noqa: E731
        assert rest(env) == rest(environ)


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hp.thp_mode(str(f)) == "madvise"
    assert hp.thp_mode(str(tmp_path / "missing")) is None


def _info(env):
    out = subprocess.run([sys.executable, "-c", "from jace.cli import entry; entry()", "info"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_jace_command_restarts_with_huge_pages_where_it_helps():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hp.OPT_OUT)}
    expected = hp.reexec_environment(env, hp.thp_mode(), hp.glibc_version()) is not None
    assert ("hugepage malloc on" in _info(env)) == expected
    assert "hugepage malloc off" in _info({**env, hp.OPT_OUT: "0"})
