"""Timing helpers shared by the benchmark scripts (plain Python: also imported in the mace-torch venv).

* ``wait_for_quiet``: wait until the machine's 1-minute load average is low before timing.
* ``round_robin``: time several prepared calls in turn, so a burst of load from other processes hits
  every point of a comparison alike.
* ``time_dynamics``: warm-up steps, then the timed steps of an ASE dynamics object.
"""

from __future__ import annotations

import os
import time


def wait_for_quiet(max_load: float, max_wait_s: float) -> tuple[float, float]:
    """Poll the 1-minute load average until it is below ``max_load`` (at most ``max_wait_s``).

    Returns (load average when it returned, seconds waited).
    """
    t0 = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - t0 < max_wait_s:
        time.sleep(15)
    return os.getloadavg()[0], time.time() - t0


def round_robin(calls, rounds: int) -> tuple[list[list[float]], list[list[float]]]:
    """Call every callable in ``calls`` once per round, ``rounds`` rounds.

    Each callable must block until its result is ready. Returns (seconds [n_calls][rounds],
    1-minute load average after each call [n_calls][rounds]).
    """
    times = [[] for _ in calls]
    loads = [[] for _ in calls]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - t0)
            loads[i].append(os.getloadavg()[0])
    return times, loads


def time_dynamics(dyn, steps: int, warmup_steps: int = 2) -> tuple[float, float]:
    """Run ``warmup_steps`` then ``steps`` steps of an ASE dynamics object: (warm-up s, timed s)."""
    t0 = time.perf_counter()
    dyn.run(warmup_steps)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    dyn.run(steps)
    return warm, time.perf_counter() - t0
