"""A training config made ready for a time-limited run on the device machine (``device_kit.sh train``).

    python benchmarks/device_train_config.py CONFIG DATA_DIR MINUTES RUN_DIR OUT.yaml

Points every data path of CONFIG at ``DATA_DIR/<dataset>/<file name>`` (the carried copy of
``../shared/data``), sets ``training.max_minutes`` to MINUTES with no epoch limit, the output directory
to RUN_DIR, and writes the result to OUT.yaml. The dataset folder is the one the path names
(``../../shared/data/acac/train_300K.xyz`` → ``DATA_DIR/acac/train_300K.xyz``).
"""

from __future__ import annotations

import os
import sys

import yaml

DATA_KEYS = ("train", "validation", "isolated_atoms")


def carried(path: str, data_dir: str) -> str:
    """DATA_DIR/<last folder>/<file> for a path into the shared data; an error if that file is missing."""
    folder, name = os.path.split(os.path.normpath(path))
    new = os.path.join(data_dir, os.path.basename(folder), name)
    if not os.path.exists(new):
        raise SystemExit(f"device_train_config: {path} was not carried: no {new}")
    return new


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 5:
        raise SystemExit(__doc__)
    config, data_dir, minutes, run_dir, out = argv
    with open(config) as fh:
        cfg = yaml.safe_load(fh)
    data = cfg.get("data") or {}
    for key in DATA_KEYS:
        if isinstance(data.get(key), str):
            data[key] = carried(data[key], data_dir)
    if isinstance(data.get("test"), dict):
        data["test"] = {name: carried(p, data_dir) for name, p in data["test"].items()}
    elif isinstance(data.get("test"), str):
        data["test"] = carried(data["test"], data_dir)
    elif isinstance(data.get("test"), list):
        data["test"] = [carried(p, data_dir) for p in data["test"]]
    cfg.setdefault("training", {}).update(max_minutes=float(minutes), max_epochs=1_000_000)
    cfg["output_dir"] = run_dir
    with open(out, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    print(f"{config} -> {out}: max_minutes {float(minutes):g}, data from {data_dir}, output {run_dir}")


if __name__ == "__main__":
    main()
