"""Ablation sweeps: a YAML file naming a grid of design points around one base training config.

Format (paths relative to the sweep file's directory)::

    base: path/to/train_config.yaml      # or an inline mapping  base_config: {model: ..., data: ...}
    grid:                                # dotted keys into the base config → lists of values
      model.correlation: [1, 2, 3]
      model.nonlinearity: [true, false]
    points:                              # optional explicit extra points, each a mapping
      - {name: mace_like, model.correlation: 3}
    seeds: [0]                           # [0] (a single integer is also accepted)
    budget: {max_epochs: 10}             # and/or {minutes: 5}; the same for every point  [no limit]
    test_sets: {in_domain: path.xyz, ood_600K: path2.xyz}
    scans: {molecule: path.xyz, index: 0}   # optional structure for smoothness scans; also
                                         #   bond: [i, j], dihedral: [a, b, c, d], dimer: [A, B]
    out_dir: sweep_out                   # [sweep_out]

Parsing is strict: an unknown key (with the nearest known one suggested), a value of the wrong type,
a missing file or a dotted key whose intermediate keys do not exist in the base config is a
:class:`SweepError` (a ValueError) naming the sweep file and the key. The leaf of a dotted key may
be absent from the base config (the model's default is then being overridden); whether the keys and
values make a valid training config is checked by :meth:`Sweep.check_configs` (through
:func:`jace.config.parse_train_config`), which the runner calls once the model types are known.

:meth:`Sweep.expand` gives the design points: the full Cartesian product of the grid (first axis
outermost, in file order), then the explicit points, each once per seed (seed innermost).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import math
import os
from typing import Any, Mapping, Optional

SWEEP_KEYS = ("base", "base_config", "grid", "points", "seeds", "budget", "test_sets", "scans", "out_dir")
BUDGET_KEYS = ("max_epochs", "minutes")
SCAN_KEYS = ("molecule", "index", "bond", "dihedral", "dimer")
# Keys a sweep may not override: the seed comes from ``seeds``, the output directory from the runner.
RESERVED_OVERRIDES = ("seed", "output_dir")


class SweepError(ValueError):
    """A sweep file that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training budget of every design point: at most ``max_epochs`` epochs and/or ``minutes`` of
    wall time (None: no limit of that kind)."""

    max_epochs: Optional[int] = None
    minutes: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class ScanSettings:
    """Where the smoothness scans start: frame ``index`` of ``molecule``; optional explicit choices
    of the bond (i, j), dihedral (a, b, c, d) and dimer (A, B) — else picked by ``default_scans``."""

    molecule: str
    index: int = 0
    bond: Optional[tuple[int, int]] = None
    dihedral: Optional[tuple[int, int, int, int]] = None
    dimer: Optional[tuple[str, str]] = None


@dataclasses.dataclass(frozen=True)
class DesignPoint:
    """One training run of the sweep: ``overrides`` (dotted key → value) applied to the base config,
    with ``seed``."""

    name: str
    overrides: dict
    seed: int

    @property
    def run_name(self) -> str:
        """``name`` with the seed, e.g. ``correlation=2,nonlinearity=off,seed=0`` (unique in a sweep)."""
        return f"{self.name},seed={self.seed}"

    @property
    def dirname(self) -> str:
        """A file-system-safe form of :attr:`run_name` for the point's output directory."""
        keep = "-_.,=+"
        return "".join(ch if ch.isalnum() or ch in keep else "_" for ch in self.run_name)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep file. All paths are absolute.

    base_config: the base training config as a plain dict (deep-copied on use); base_dir: the
    directory its relative data paths are relative to; base_source: its file (None when inline).
    grid: dotted key → tuple of values, in file order; points: (name, overrides) of the explicit
    points.
    """

    source: str
    base_config: dict
    base_dir: str
    base_source: Optional[str]
    grid: dict
    points: tuple
    seeds: tuple
    budget: Budget
    test_sets: dict
    scans: Optional[ScanSettings]
    out_dir: str

    def expand(self) -> list[DesignPoint]:
        """Every design point: grid product (first axis outermost), then explicit points; each with
        every seed (seed innermost). Names are unique (checked when the file is loaded)."""
        out = []
        for name, overrides in _named_points(self):
            for seed in self.seeds:
                out.append(DesignPoint(name=name, overrides=dict(overrides), seed=int(seed)))
        return out

    def config_for(self, point: DesignPoint) -> dict:
        """The training config of one point: a deep copy of the base with its overrides and seed."""
        cfg = apply_overrides(self.base_config, point.overrides, source=self.source)
        cfg["seed"] = int(point.seed)
        return cfg

    def check_configs(self) -> None:
        """Parse the config of every design point with :func:`jace.config.parse_train_config`
        (without checking data paths); the first failure is a SweepError naming the point."""
        from jace.config import parse_train_config

        for point in self.expand():
            cfg = self.config_for(point)
            try:
                parse_train_config(cfg, file=self.base_source or self.source, base_dir=self.base_dir, check_paths=False)
            except ValueError as exc:
                raise SweepError(f"{self.source}: design point '{point.name}': {exc}") from None


# --------------------------------------------------------------------------------------------------
# Overrides


def _suggest(key: str, known) -> str:
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if known:
        return f"; keys there: {', '.join(known)}"
    return ""


def _split_key(key: Any, source: str) -> list[str]:
    if not isinstance(key, str) or not key.strip():
        raise SweepError(f"{source}: a dotted key must be a non-empty string, got {key!r}")
    parts = key.split(".")
    if any(not p for p in parts):
        raise SweepError(f"{source}: '{key}' is not a valid dotted key (empty component)")
    return parts


def _check_path(config: Mapping, key: str, source: str, what: str = "") -> None:
    """Every component of ``key`` but the last must exist in ``config`` and be a mapping."""
    parts = _split_key(key, source)
    where = f"{what}'{key}'" if what else f"'{key}'"
    node: Any = config
    for depth, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: depth + 1])
        if not isinstance(node, Mapping):
            raise SweepError(f"{source}: {where}: '{'.'.join(parts[:depth])}' is not a mapping in the base config")
        if part not in node:
            known = [".".join(parts[:depth] + [str(k)]) for k in node]
            raise SweepError(f"{source}: {where}: the base config has no '{prefix}'{_suggest(prefix, known)}")
        node = node[part]
    if not isinstance(node, Mapping):
        raise SweepError(f"{source}: {where}: '{'.'.join(parts[:-1])}' is not a mapping in the base config")


def apply_overrides(config: Mapping, overrides: Mapping[str, Any], source: str = "<config>") -> dict:
    """A deep copy of ``config`` with each dotted key of ``overrides`` set (``"model.correlation": 3``
    sets ``config["model"]["correlation"]``). Intermediate keys must exist and be mappings; the last
    key may be new. ``config`` is not changed. Raises SweepError naming ``source`` and the key."""
    if not isinstance(config, Mapping):
        raise SweepError(f"{source}: the base config must be a mapping, got {type(config).__name__}")
    out = copy.deepcopy(dict(config))
    for key, value in overrides.items():
        _check_path(out, key, source)
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------------
# Names


def format_value(value: Any) -> str:
    """A short text for a value in a point name: on/off for booleans, none, compact numbers, lists
    joined by '-'."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _short_keys(keys) -> dict:
    """Dotted key → the shortest unambiguous suffix (usually the last component)."""
    keys = list(keys)
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            clash = [k for k in keys if k != key and (k == suffix or k.endswith("." + suffix))]
            if not clash:
                break
        out[key] = suffix
    return out


def point_name(overrides: Mapping[str, Any], short: Optional[Mapping[str, str]] = None) -> str:
    """``key=value`` pairs joined by commas (``base`` when empty), keys shortened by ``short``."""
    if not overrides:
        return "base"
    short = short or _short_keys(overrides)
    return ",".join(f"{short.get(k, k)}={format_value(v)}" for k, v in overrides.items())


def _named_points(sweep: Sweep) -> list[tuple[str, dict]]:
    out = []
    axes = list(sweep.grid.items())
    if axes or not sweep.points:
        varied = [k for k, values in axes if len(values) > 1]
        short = _short_keys(varied)
        for combo in itertools.product(*[values for _, values in axes]):
            overrides = {k: v for (k, _), v in zip(axes, combo)}
            name = point_name({k: overrides[k] for k in varied}, short)
            out.append((name, overrides))
    out.extend((name, dict(ov)) for name, ov in sweep.points)
    return out


# --------------------------------------------------------------------------------------------------
# Loading


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_yaml(path: str, what: str) -> Any:
    from jace.config import read_strict_yaml

    return read_strict_yaml(path, SweepError, what)


def _check_keys(file: str, mapping: Mapping, prefix: str, allowed) -> None:
    for key in mapping:
        if not isinstance(key, str) or key not in allowed:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise SweepError(f"{file}: unknown key '{where}'{_suggest(key, allowed)}")


def _mapping(file: str, value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SweepError(f"{file}: {key} must be a mapping (key: value pairs), got {_describe(value)}")
    return value


def _int(file: str, value: Any, key: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise SweepError(f"{file}: {key} must be an integer, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise SweepError(f"{file}: {key} must be >= {minimum}, got {value}")
    return value


def _path(file: str, value: Any, key: str, base_dir: str, check: bool, what: str = "file") -> str:
    if not isinstance(value, str) or not value.strip():
        raise SweepError(f"{file}: {key} must be a path (a non-empty string), got {_describe(value)}")
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
    if check and not os.path.exists(path):
        raise SweepError(f"{file}: {key}: {what} '{value}' not found (looked for {path})")
    return path


def _parse_budget(file: str, raw: Any) -> Budget:
    if raw is None:
        return Budget()
    m = _mapping(file, raw, "budget")
    _check_keys(file, m, "budget", BUDGET_KEYS)
    if not m:
        raise SweepError(f"{file}: budget is empty; give max_epochs and/or minutes")
    max_epochs = _int(file, m["max_epochs"], "budget.max_epochs", 1) if "max_epochs" in m else None
    minutes = None
    if "minutes" in m:
        v = m["minutes"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SweepError(f"{file}: budget.minutes must be a positive number, got {_describe(v)}")
        minutes = float(v)
    return Budget(max_epochs=max_epochs, minutes=minutes)


def _parse_scans(file: str, raw: Any, base_dir: str, check_paths: bool) -> Optional[ScanSettings]:
    if raw is None:
        return None
    m = _mapping(file, raw, "scans")
    _check_keys(file, m, "scans", SCAN_KEYS)
    if "molecule" not in m:
        raise SweepError(f"{file}: missing required key 'scans.molecule'")
    molecule = _path(file, m["molecule"], "scans.molecule", base_dir, check_paths)
    index = _int(file, m.get("index", 0), "scans.index")

    def ints(key, n):
        v = m.get(key)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise SweepError(f"{file}: scans.{key} must be a list of {n} atom indices, got {_describe(v)}")
        out = tuple(_int(file, x, f"scans.{key}", 0) for x in v)
        if len(set(out)) != n:
            raise SweepError(f"{file}: scans.{key} must name {n} different atoms, got {list(out)}")
        return out

    dimer = m.get("dimer")
    if dimer is not None:
        from ase.data import atomic_numbers

        if (not isinstance(dimer, (list, tuple)) or len(dimer) != 2
                or not all(isinstance(s, str) and atomic_numbers.get(s, 0) > 0 for s in dimer)):
            raise SweepError(f"{file}: scans.dimer must be two chemical symbols, got {_describe(dimer)}")
        dimer = (dimer[0], dimer[1])
    return ScanSettings(molecule=molecule, index=index, bond=ints("bond", 2), dihedral=ints("dihedral", 4), dimer=dimer)


def _check_override(file: str, base: Mapping, key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise SweepError(f"{file}: {where}: keys must be dotted strings, got {_describe(key)}")
    parts = _split_key(key, file)
    if len(parts) == 1 and parts[0] in RESERVED_OVERRIDES:
        hint = "use 'seeds:' for seeds" if parts[0] == "seed" else "the runner sets each point's output directory"
        raise SweepError(f"{file}: {where}: '{key}' cannot be swept ({hint})")
    _check_path(base, key, file, what=f"{where} ")
    return key


def load_sweep(path, check_paths: bool = True) -> Sweep:
    """Read and check a sweep file; see the module docstring for the format.

    check_paths: fail when the base config, a test set or the scan molecule does not exist.
    """
    file = os.fspath(path)
    raw = _read_yaml(file, "sweep file")
    sweep_dir = os.path.dirname(os.path.abspath(file))
    if raw is None:
        raise SweepError(f"{file}: the sweep file is empty; expected at least 'base' (or 'base_config') and 'grid' or 'points'")
    m = _mapping(file, raw, "the top level")
    _check_keys(file, m, "", SWEEP_KEYS)

    # Base config: a file or an inline mapping, exactly one.
    if ("base" in m) == ("base_config" in m):
        raise SweepError(f"{file}: give exactly one of 'base' (a config file) or 'base_config' (an inline mapping)")
    if "base" in m:
        base_source = _path(file, m["base"], "base", sweep_dir, True, what="base config")
        base = _read_yaml(base_source, "base config")
        if not isinstance(base, Mapping):
            raise SweepError(f"{file}: base: '{m['base']}' must hold a mapping (a training config), got {_describe(base)}")
        base_dir = os.path.dirname(base_source)
    else:
        base = _mapping(file, m["base_config"], "base_config")
        base_source = None
        base_dir = sweep_dir
    base = copy.deepcopy(dict(base))

    # Grid.
    grid: dict[str, tuple] = {}
    raw_grid = m.get("grid")
    if raw_grid is not None:
        for key, values in _mapping(file, raw_grid, "grid").items():
            key = _check_override(file, base, key, "grid")
            if not isinstance(values, (list, tuple)) or not values:
                raise SweepError(f"{file}: grid.'{key}' must be a non-empty list of values, got {_describe(values)}")
            seen = []
            for v in values:
                if v in seen and type(v) is type(seen[seen.index(v)]):
                    raise SweepError(f"{file}: grid.'{key}' lists the value {_describe(v)} twice")
                seen.append(v)
            grid[key] = tuple(values)

    # Explicit points.
    points = []
    raw_points = m.get("points")
    if raw_points is not None:
        if not isinstance(raw_points, (list, tuple)):
            raise SweepError(f"{file}: points must be a list of mappings, got {_describe(raw_points)}")
        for n, p in enumerate(raw_points):
            where = f"points[{n}]"
            p = _mapping(file, p, where)
            overrides = {}
            for key, value in p.items():
                if key == "name":
                    continue
                overrides[_check_override(file, base, key, where)] = value
            if "name" in p:
                name = p["name"]
                if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
                    raise SweepError(f"{file}: {where}.name must be a non-empty string, got {_describe(name)}")
                name = str(name)
            else:
                name = point_name(overrides)
            points.append((name, overrides))

    # Seeds.
    raw_seeds = m.get("seeds", [0])
    if not isinstance(raw_seeds, (list, tuple)):
        raw_seeds = [raw_seeds]
    if not raw_seeds:
        raise SweepError(f"{file}: seeds must be a non-empty list of integers")
    seeds = tuple(_int(file, s, "seeds", 0) for s in raw_seeds)
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{file}: seeds lists a seed twice: {list(seeds)}")

    budget = _parse_budget(file, m.get("budget"))

    test_sets: dict[str, str] = {}
    if m.get("test_sets") is not None:
        for name, p in _mapping(file, m["test_sets"], "test_sets").items():
            if not isinstance(name, str) or not name.strip():
                raise SweepError(f"{file}: test_sets: names must be non-empty strings, got {_describe(name)}")
            test_sets[name] = _path(file, p, f"test_sets.{name}", sweep_dir, check_paths, what="test set")

    scans = _parse_scans(file, m.get("scans"), sweep_dir, check_paths)
    out_dir = _path(file, m.get("out_dir", "sweep_out"), "out_dir", sweep_dir, False)

    sweep = Sweep(source=file, base_config=base, base_dir=base_dir, base_source=base_source, grid=grid,
                  points=tuple(points), seeds=seeds, budget=budget, test_sets=test_sets, scans=scans,
                  out_dir=out_dir)
    names: dict[str, int] = {}
    for name, _ in _named_points(sweep):
        names[name] = names.get(name, 0) + 1
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise SweepError(f"{file}: design point name '{dup[0]}' is used more than once; give the explicit points distinct names")
    return sweep
