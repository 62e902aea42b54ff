"""Transparent huge pages for XLA's CPU buffers: why, when, and the switch.

On CPU every call of a compiled program takes its temporary buffers from glibc's malloc, and a
multi-ACE energy+forces call on a 512-atom cell needs a few hundred MB of them, and every call faults
them in afresh, one 4 KiB page at a time: 82,000 minor page faults per call (float64, ``getrusage``),
a third of the call's CPU time in the kernel. (Where they are released between calls is not known:
turning glibc's mmap of large blocks off, ``glibc.malloc.mmap_max=0`` with a huge trim threshold,
left the count unchanged.) Measured on the development machine (2 cores, THP mode ``madvise``),
512-atom Si, ``mace`` with 32 channels, three fresh processes per setting, alternating:

  ============  ============================  ==================================
  precision     default malloc                ``glibc.malloc.hugetlb=1``
  ============  ============================  ==================================
  float32       123–148 ms, 41,000 faults     75–77 ms, 330–760 faults
  float64       222–283 ms, 82,000 faults     160–180 ms, 440–610 faults
  ============  ============================  ==================================

(median of 20 calls each; ``python benchmarks/hugepage_malloc.py`` measures it). With the glibc tunable
``glibc.malloc.hugetlb=1`` (glibc ≥ 2.35), malloc asks for transparent huge pages (``madvise``) on the
memory it maps, so a fault brings in 2 MiB instead of 4 KiB. The kernel must allow THP on request:
``/sys/kernel/mm/transparent_hugepage/enabled`` is ``[madvise]`` (Debian and Ubuntu's default) or
``[always]`` (where huge pages are used anyway and the tunable changes little).

glibc reads tunables only when a process starts, so the ``jace`` command re-executes itself once with
``GLIBC_TUNABLES=...:glibc.malloc.hugetlb=1`` when it would help (:func:`reexec_environment`).
``JACE_HUGEPAGE_MALLOC=0`` turns that off. Scripts that import jace set it themselves::

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_script.py
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
OPT_OUT = "JACE_HUGEPAGE_MALLOC"


def thp_mode(path: str = THP_ENABLED) -> Optional[str]:
    """The kernel's transparent-huge-page mode ("always", "madvise" or "never"), None when unknown."""
    try:
        with open(path) as fh:
            m = re.search(r"\[(\w+)\]", fh.read())
    except OSError:
        return None
    return m.group(1) if m else None


def glibc_version() -> Optional[tuple[int, int]]:
    """(major, minor) of the running glibc, None when the C library is not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    m = re.match(r"glibc (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _tunable_value(environ: Mapping[str, str]) -> Optional[str]:
    """The value GLIBC_TUNABLES gives the hugetlb tunable, None when it does not name it."""
    for item in environ.get("GLIBC_TUNABLES", "").split(":"):
        key, _, value = item.partition("=")
        if key == TUNABLE:
            return value
    return None


def active(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process was started with the hugetlb malloc tunable set (to a non-zero value)."""
    return _tunable_value(environ) not in (None, "", "0")


def reexec_environment(
    environ: Mapping[str, str], mode: Optional[str], glibc: Optional[tuple[int, int]], platform: str = sys.platform
) -> Optional[dict]:
    """The environment to restart the process with so malloc uses huge pages, or None to go on as is.

    None when: not Linux; glibc older than 2.35 or absent; THP mode not "madvise" (under "always"
    huge pages are used already, under "never" they cannot be); ``JACE_HUGEPAGE_MALLOC`` is 0, false,
    no or off; or GLIBC_TUNABLES already names the tunable (the user chose). Other tunables are kept.
    """
    if not platform.startswith("linux") or glibc is None or glibc < (2, 35) or mode != "madvise":
        return None
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if _tunable_value(environ) is not None:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
    return env


def describe(environ: Mapping[str, str] = os.environ) -> str:
    """One line for logs and ``jace info``: the THP mode and whether the tunable is on."""
    mode, version = thp_mode(), glibc_version()
    glibc = f"glibc {version[0]}.{version[1]}" if version else "not glibc"
    state = "on" if active(environ) else "off"
    return f"hugepage malloc {state} (transparent huge pages: {mode or 'unknown'}; {glibc})"
