"""The mace-torch side of ``benchmarks/md_throughput.py``: ASE molecular dynamics with mace's own ASE
calculator (``mace.calculators.MACECalculator``) on the structures of ``benchmarks/structures.py``.

Runs in the mace-torch virtual environment (see ``benchmarks/mace_torch_side.py``)::

    benchmarks/_work/torch-venv/bin/python benchmarks/md_throughput_torch.py HP.json CASE DTYPE STEPS

The model is ``mace_torch_side.build_model`` (the same hyperparameters as the jace side; random weights
from ``torch.manual_seed(0)``, shift 0, scale 1), saved with ``torch.save`` and loaded by
``MACECalculator``. MD: ASE ``VelocityVerlet``, 0.5 fs, from the structure at rest; two untimed warm-up
steps, then ``STEPS`` timed ones. Prints one JSON line: steps/s, atom-steps/s, seconds, load average.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_timing import time_dynamics  # noqa: E402


def main() -> int:
    hp_path, case, dtype, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import mace_torch_side as side
    import structures

    torch = side.setup_torch(dtype, threads=2)
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from mace.calculators import MACECalculator

    hp = side.load_hyperparameters(hp_path)
    atoms = structures.acac_molecule() if case == "acac_1" else structures.silicon_cell(int(case.split("_")[1]))
    z_table = side.z_table_for(hp, [atoms])
    data = side.atomic_data(side.configurations([atoms]), z_table, float(hp["cutoff"]))
    model = side.build_model(hp, z_table, side.avg_num_neighbors_of(data))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.model")
        torch.save(model, path)
        calc = MACECalculator(model_paths=path, device="cpu", default_dtype=dtype)
    atoms.calc = calc
    warm, seconds = time_dynamics(VelocityVerlet(atoms, 0.5 * units.fs), steps)
    print(json.dumps({
        "implementation": "mace-torch ASE calculator", "case": case, "dtype": dtype, "n_atoms": len(atoms),
        "steps": steps, "seconds": seconds, "warmup_seconds": warm, "steps_per_s": steps / seconds,
        "atom_steps_per_s": steps * len(atoms) / seconds, "loadavg": os.getloadavg()[0],
        "versions": side.versions(),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
