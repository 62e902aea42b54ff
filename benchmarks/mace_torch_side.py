"""The PyTorch MACE (mace-torch) side of the side-by-side benchmark: latency, training speed, size.

Runs in the separate mace-torch virtual environment, not in the project's ``.venv``::

    python3 -m venv benchmarks/_work/torch-venv
    benchmarks/_work/torch-venv/bin/pip install torch==2.13.0 mace-torch

    benchmarks/_work/torch-venv/bin/python benchmarks/mace_torch_side.py HP.json \\
        --dtype float32 float64 --out benchmarks/_work/mace_torch_side.json
    # subsets:  --cases acac_1 si_512 train   --repeats 20   --stress   --threads 2   --device cuda

``HP.json`` holds the model hyperparameters (the names are the side-by-side benchmark's, not mace's)::

    {"channels": 32, "l_max": 2, "correlation": 3, "layers": 2, "hidden_l_max": 1, "n_rad": 8,
     "cutoff": 5.0, "envelope_p": 5, "radial_mlp": [64, 64, 64]}

Optional keys: ``avg_num_neighbors`` (default: measured on the case's own structures, or on the
training set for the training case, as mace's ``--compute_avg_num_neighbors`` does), ``elements``
(chemical symbols; default: the elements of the case's structures), ``mlp_irreps`` ("16x0e"),
``gate`` ("silu"), ``use_reduced_cg`` (false, mace's command-line default), ``energy_weight`` (1),
``forces_weight`` (100), ``lr`` (0.01), ``weight_decay`` (5e-7), ``clip_grad`` (10), ``ema_decay`` (0.99),
``batch_size`` (5).

The mace model
--------------
``mace.modules.ScaleShiftMACE`` built the way ``mace_run_train --model MACE`` builds it: hidden irreps
``(channels × Irreps.spherical_harmonics(hidden_l_max)).sort().simplify()`` (``32x0e+32x1o`` for
hidden_l_max 1), spherical harmonics to ``l_max`` on the edges, ``n_rad`` Bessel functions times the
polynomial cutoff envelope of order ``envelope_p``, radial MLP ``radial_mlp`` with SiLU, first interaction
``RealAgnosticInteractionBlock``, later ones ``RealAgnosticResidualInteractionBlock``, product basis of
correlation order ``correlation`` with element-dependent weights, linear readout after every layer but the
last and a non-linear readout (``mlp_irreps`` hidden, SiLU) after the last, whose node features are
scalars only. Scale/shift: shift 0 and scale 1 for the latency cases (random weights; the cost does not
depend on them); for training, scale = RMS of the training forces and E0s from the isolated atoms, as
mace's default ``rms_forces_scaling`` does. Weights are initialised from ``torch.manual_seed(0)``.

What is timed
-------------
Latency cases (``acac_1``, ``acac_32``, ``si_64``, ``si_512``, ``c_64``, ``c_512``; structures from
``benchmarks/structures.py``), per call, after ``--warmup`` untimed calls, ``--repeats`` timed calls:

* ``prep``: what mace's ASE calculator does before the model on every call: ``config_from_atoms`` →
  ``AtomicData.from_config`` (matscipy neighbour list on the CPU, one-hot, shifts) for every structure →
  collate into one ``Batch`` with mace's ``torch_geometric`` ``DataLoader`` → ``batch.to_dict()``.
* ``model``: ``model(batch_dict, training=False, compute_force=True)``: the energy forward pass plus one
  reverse-mode ``torch.autograd.grad`` of the summed energy with respect to the positions (forces are its
  negative). This is the number to compare. With ``--stress`` also ``compute_stress=True`` (periodic
  cases): the same reverse pass also differentiates with respect to a symmetric 3×3 strain applied to
  positions and cell (``stress = -dE/dε / volume``); mace's ASE calculator always asks for stress.
* ``total`` = median(prep) + median(model) (and the same for the minima).

Training (case ``train``): ``acac/train_300K.xyz`` (500 frames), batch size 5, shuffled, last partial
batch dropped (mace's loader); every step is mace's own ``mace.tools.train.take_step``: zero grads,
forward with ``training=True`` (forces through ``create_graph=True`` so the loss can be differentiated),
``WeightedEnergyForcesLoss`` (per-atom energy MSE × energy_weight + force-component MSE × forces_weight),
``backward``, gradient-norm clipping at ``clip_grad``, Adam with AMSGrad (mace's parameter groups and
weight decay), EMA update. ``--train-warmup`` (3) untimed steps, then ``--train-steps`` (20) timed steps;
the neighbour lists of the whole set are built once beforehand, as mace does; collating each batch is
inside the timed step (it is inside mace's training loop too).

Threads and noise: torch's intra-op thread pool is ``--threads`` (2 by default, one per core of the
development machine). When other processes keep the cores busy, two threads become erratic (calls up
to 30 times slower than their best, because each parallel region waits for a descheduled thread);
one thread degrades gracefully. Every record keeps the 1-minute load average before and after the case;
compare numbers only from runs on an otherwise idle machine, or use ``--threads 1`` on both sides.

Output (``--out``): ``{"benchmark": "mace_torch_side", "records": [...]}``, one record per (case, dtype);
fields are listed in ``_common_fields``, ``latency_case`` and ``training_case``. Times are seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from typing import List, Optional, Sequence

# e3nn 0.4.4 loads its constants with torch.load, which fails under torch ≥ 2.6's weights_only default;
# ``import mace`` sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to allow it, so mace must be imported before e3nn.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
# Known, harmless warnings: the one just described, and TorchScript's on e3nn's code-generated modules.
warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import structures  # noqa: E402  (ase + numpy only)

LATENCY_CASES = list(structures.LATENCY_CASES)
ALL_CASES = LATENCY_CASES + ["train"]

DEFAULTS = {
    "mlp_irreps": "16x0e",
    "gate": "silu",
    "use_reduced_cg": False,
    "energy_weight": 1.0,
    "forces_weight": 100.0,
    "lr": 0.01,
    "weight_decay": 5e-7,
    "clip_grad": 10.0,
    "ema_decay": 0.99,
    "batch_size": 5,
}
REQUIRED = ("channels", "l_max", "correlation", "layers", "hidden_l_max", "n_rad", "cutoff", "envelope_p", "radial_mlp")


def load_hyperparameters(path: str) -> dict:
    with open(path) as f:
        hp = json.load(f)
    missing = [k for k in REQUIRED if k not in hp]
    if missing:
        raise SystemExit(f"{path}: missing hyperparameters {missing}")
    return {**DEFAULTS, **hp}


# --------------------------------------------------------------------------------------------------
# mace helpers (imported lazily so that --help works without torch)


def setup_torch(dtype: str, threads: int):
    import mace  # noqa: F401  (before e3nn)
    import torch

    torch.set_default_dtype({"float32": torch.float32, "float64": torch.float64}[dtype])
    torch.set_num_threads(threads)
    return torch


def versions() -> dict:
    import ase
    import e3nn
    import mace
    import matscipy
    import torch

    return {
        "torch": torch.__version__,
        "mace": mace.__version__,
        "e3nn": e3nn.__version__,
        "ase": ase.__version__,
        "matscipy": matscipy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def hidden_irreps(channels: int, hidden_l_max: int):
    from e3nn import o3

    return (channels * o3.Irreps.spherical_harmonics(hidden_l_max)).sort().irreps.simplify()


def z_table_for(hp: dict, frames) -> "object":
    from ase.data import atomic_numbers
    from mace.tools import AtomicNumberTable

    present = sorted({int(z) for a in frames for z in a.numbers})
    if hp.get("elements"):
        zs = sorted(atomic_numbers[s] for s in hp["elements"])
        extra = set(present) - set(zs)
        if extra:
            raise SystemExit(f"structures hold elements {sorted(extra)} that are not in 'elements'")
    else:
        zs = present
    return AtomicNumberTable(zs)


def build_model(hp: dict, z_table, avg_num_neighbors: float, atomic_energies: Optional[np.ndarray] = None,
                scale: float = 1.0, shift: float = 0.0, seed: int = 0):
    """``ScaleShiftMACE`` as ``mace_run_train --model MACE`` builds it (see the module docstring)."""
    import torch
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    if atomic_energies is None:
        atomic_energies = np.zeros(len(z_table))
    return modules.ScaleShiftMACE(
        r_max=float(hp["cutoff"]),
        num_bessel=int(hp["n_rad"]),
        num_polynomial_cutoff=int(hp["envelope_p"]),
        max_ell=int(hp["l_max"]),
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=int(hp["layers"]),
        num_elements=len(z_table),
        hidden_irreps=hidden_irreps(int(hp["channels"]), int(hp["hidden_l_max"])),
        MLP_irreps=o3.Irreps(hp["mlp_irreps"]),
        atomic_energies=np.asarray(atomic_energies, dtype=float),
        avg_num_neighbors=float(avg_num_neighbors),
        atomic_numbers=list(z_table.zs),
        correlation=int(hp["correlation"]),
        gate=modules.gate_dict[hp["gate"]],
        radial_MLP=[int(x) for x in hp["radial_mlp"]],
        radial_type="bessel",
        use_reduced_cg=bool(hp["use_reduced_cg"]),
        atomic_inter_scale=float(scale),
        atomic_inter_shift=float(shift),
        heads=["Default"],
    )


def n_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def configurations(frames):
    """ase.Atoms → mace ``Configuration`` list, DFT labels (if any) stored as ``REF_energy`` / ``REF_forces``.

    mace's own xyz loader does the same renaming, because ase ≥ 3.23 keeps ``energy``/``forces`` in
    ``atoms.calc``; the labels are read before ``atoms.copy()`` drops the calculator. Unlabelled
    structures get no energy/forces properties (their loss weights are 0).
    """
    from mace.data import KeySpecification, config_from_atoms

    keyspec = KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
    out = []
    for a in frames:
        b = a.copy()
        try:
            e, f = structures.labels(a)
            b.info["REF_energy"] = e
            b.arrays["REF_forces"] = f
        except ValueError:
            pass
        out.append(config_from_atoms(b, key_specification=keyspec))
    return out


def atomic_data(configs, z_table, cutoff: float):
    from mace.data import AtomicData

    return [AtomicData.from_config(c, z_table=z_table, cutoff=cutoff) for c in configs]


def loader(data, batch_size: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0):
    import torch
    from mace.tools import torch_geometric

    return torch_geometric.dataloader.DataLoader(
        dataset=data, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


def frames_to_batch_dict(frames, z_table, cutoff: float):
    """The per-call data pipeline of mace's ASE calculator, for a list of structures forming one batch."""
    data = atomic_data(configurations(frames), z_table, cutoff)
    batch = next(iter(loader(data, batch_size=len(data))))
    return batch, batch.to_dict()


def avg_num_neighbors_of(data) -> float:
    """mace's ``compute_avg_num_neighbors``: mean in-degree over all atoms with at least one neighbour."""
    from mace import modules

    return float(modules.compute_avg_num_neighbors(loader(data, batch_size=max(1, len(data)))))


# --------------------------------------------------------------------------------------------------
# records


def _device(name: str):
    """torch.device(name) and a function that waits for its queued work (a no-op on the CPU)."""
    import torch

    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: torch sees no CUDA device")
        return device, torch.cuda.synchronize
    return device, lambda: None


def _common_fields(case: str, dtype: str, hp: dict, threads: int, device: str = "cpu") -> dict:
    import torch

    return {
        "case": case,
        "dtype": dtype,
        "implementation": "mace-torch",
        "model_class": "mace.modules.ScaleShiftMACE",
        "versions": versions(),
        "threads": threads,
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else (platform.processor() or platform.machine()),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "hyperparameters": hp,
        "hidden_irreps": str(hidden_irreps(int(hp["channels"]), int(hp["hidden_l_max"]))),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _stats(times: Sequence[float]) -> dict:
    t = np.asarray(times, dtype=float)
    return {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "mean_s": float(np.mean(t)),
            "n": int(t.size)}


def latency_case(case: str, dtype: str, hp: dict, data_dir: Optional[str], repeats: int, warmup: int,
                 threads: int, stress: bool, device_name: str = "cpu") -> dict:
    import torch

    device, sync = _device(device_name)
    desc, build = structures.LATENCY_CASES[case]
    frames = build(data_dir)
    z_table = z_table_for(hp, frames)
    cutoff = float(hp["cutoff"])
    batch, _ = frames_to_batch_dict(frames, z_table, cutoff)
    n_edges = int(batch["edge_index"].shape[1])
    avg_nn = float(hp["avg_num_neighbors"]) if hp.get("avg_num_neighbors") else avg_num_neighbors_of(
        atomic_data(configurations(frames), z_table, cutoff))
    model = build_model(hp, z_table, avg_nn).to(device)
    model.eval()

    periodic = bool(any(a.pbc.any() for a in frames))
    modes = [("model", dict(training=False, compute_force=True))]
    if stress and periodic:
        modes.append(("model_stress", dict(training=False, compute_force=True, compute_stress=True)))

    rec = _common_fields(case, dtype, hp, threads, device_name)
    rec.update({
        "kind": "latency",
        "description": desc,
        "n_atoms": int(sum(len(a) for a in frames)),
        "n_graphs": len(frames),
        "n_edges": n_edges,
        "periodic": periodic,
        "elements": [int(z) for z in z_table.zs],
        "avg_num_neighbors": avg_nn,
        "n_params": n_parameters(model),
        "repeats": repeats,
        "warmup": warmup,
    })

    # prep: atoms -> neighbour list -> AtomicData -> Batch -> dict, as mace's calculator does per call
    prep_t: List[float] = []
    batch_dict = None
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        _, batch_dict = frames_to_batch_dict(frames, z_table, cutoff)
        t1 = time.perf_counter()
        if i >= warmup:
            prep_t.append(t1 - t0)
    rec["prep"] = _stats(prep_t)

    for name, kwargs in modes:
        times: List[float] = []
        out = None
        for i in range(warmup + repeats):
            # on a GPU the batch is copied there before the clock starts, as jace's graph is
            bd = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch_dict.items()}
            bd["positions"] = bd["positions"].detach().clone()
            bd["shifts"] = bd["shifts"].detach().clone()
            sync()
            t0 = time.perf_counter()
            out = model(bd, **kwargs)
            sync()
            t1 = time.perf_counter()
            if i >= warmup:
                times.append(t1 - t0)
        rec[name] = _stats(times)
        if name == "model":
            e = out["energy"].detach()
            f = out["forces"].detach()
            rec["check"] = {"energy_sum_eV": float(e.sum()), "force_abs_max_eV_per_A": float(f.abs().max()),
                            "output_dtype": str(e.dtype)}
        else:
            rec["check"]["stress_abs_max_eV_per_A3"] = float(out["stress"].detach().abs().max())
    # sum of the two medians (and of the two minima), not the median of per-call sums
    rec["total"] = {"median_s": rec["prep"]["median_s"] + rec["model"]["median_s"],
                    "min_s": rec["prep"]["min_s"] + rec["model"]["min_s"]}
    rec["atoms_per_s_model"] = rec["n_atoms"] / rec["model"]["median_s"]
    del model
    return rec


def training_setup(hp: dict, data_dir: Optional[str], seed: int = 0, valid_fraction: float = 0.0,
                   device: str = "cpu"):
    """Data, model, loss, optimizer and EMA as ``mace_run_train --model MACE`` sets them up.

    Training data: ``acac/train_300K.xyz``; with ``valid_fraction > 0`` a random (seeded) part of it is
    held out as ``valid_data`` (mace's default is 0.1; the benchmark default is 0, all 500 frames train).
    E0s from ``acac/isolated_atoms.xyz``; scale = RMS of the training forces (mace's ``rms_forces_scaling``);
    ``avg_num_neighbors`` measured on the training frames unless given; Adam with AMSGrad, betas
    (0.9, 0.999), mace's parameter groups (weight decay only on the interactions' linear weights and the
    products); EMA of the parameters (``torch_ema``, as mace).
    """
    import torch
    from mace import modules
    from mace.tools.scripts_utils import get_params_options
    from torch_ema import ExponentialMovingAverage

    frames = structures.acac_training_set(data_dir)
    z_table = z_table_for(hp, frames)
    e0s = structures.acac_isolated_atom_energies(data_dir)
    atomic_energies = np.array([e0s[z] for z in z_table.zs])
    data = atomic_data(configurations(frames), z_table, float(hp["cutoff"]))
    valid_data = []
    if valid_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(data))
        n_valid = max(1, int(round(valid_fraction * len(data))))
        valid_data = [data[i] for i in sorted(order[:n_valid])]
        data = [data[i] for i in sorted(order[n_valid:])]
    avg_nn = float(hp["avg_num_neighbors"]) if hp.get("avg_num_neighbors") else avg_num_neighbors_of(data)
    bs = int(hp["batch_size"])
    _, rms = modules.scaling_classes["rms_forces_scaling"](loader(data, bs), atomic_energies)
    scale = float(np.atleast_1d(rms)[0])
    model = build_model(hp, z_table, avg_nn, atomic_energies=atomic_energies, scale=scale, shift=0.0, seed=seed)
    model = model.to(device)  # before the optimizer and the EMA copy its parameters
    train_loader = loader(data, bs, shuffle=True, drop_last=True, seed=seed)
    loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=float(hp["energy_weight"]),
                                               forces_weight=float(hp["forces_weight"]))
    args = argparse.Namespace(lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]), amsgrad=True, beta=0.9,
                              freeze=None, lr_params_factors=json.dumps({}))
    optimizer = torch.optim.Adam(**get_params_options(args, model))
    ema = ExponentialMovingAverage(model.parameters(), decay=float(hp["ema_decay"]))
    return {"frames": frames, "z_table": z_table, "atomic_energies": atomic_energies, "data": data,
            "valid_data": valid_data, "avg_num_neighbors": avg_nn, "scale": scale, "model": model,
            "train_loader": train_loader, "loss_fn": loss_fn, "optimizer": optimizer, "ema": ema}


OUTPUT_ARGS = {"energy": True, "forces": True, "virials": False, "stress": False, "dipoles": False}


def training_case(dtype: str, hp: dict, data_dir: Optional[str], steps: int, warmup: int, threads: int,
                  device_name: str = "cpu") -> dict:
    from mace.tools.train import take_step

    device, sync = _device(device_name)
    s = training_setup(hp, data_dir, device=device_name)
    model = s["model"]
    model.train()
    clip = float(hp["clip_grad"]) if hp.get("clip_grad") else None

    def batches():
        while True:
            yield from s["train_loader"]

    it = batches()
    times: List[float] = []
    losses: List[float] = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        loss, _ = take_step(model=model, loss_fn=s["loss_fn"], batch=batch, optimizer=s["optimizer"], ema=s["ema"],
                            output_args=OUTPUT_ARGS, max_grad_norm=clip, device=device)
        loss_value = float(loss.detach())  # waits for the step, as jace's timing does
        sync()
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
            losses.append(loss_value)
    rec = _common_fields("train", dtype, hp, threads, device_name)
    st = _stats(times)
    rec.update({
        "kind": "training",
        "description": "acac train_300K, batch size 5: forward+forces, weighted E/F loss, backward, clip, AMSGrad, EMA",
        "n_train_configs": len(s["data"]),
        "batch_size": int(hp["batch_size"]),
        "elements": [int(z) for z in s["z_table"].zs],
        "avg_num_neighbors": s["avg_num_neighbors"],
        "atomic_inter_scale": s["scale"],
        "n_params": n_parameters(model),
        "warmup_steps": warmup,
        "timed_steps": steps,
        "step": st,
        "steps_per_s": 1.0 / st["mean_s"],
        "steps_per_s_median": 1.0 / st["median_s"],
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "step_includes": ["collate batch", "zero_grad", "forward (training=True, compute_force=True, create_graph)",
                          "WeightedEnergyForcesLoss", "backward", "clip_grad_norm_", "Adam(amsgrad) step",
                          "EMA update"],
    })
    return rec


# --------------------------------------------------------------------------------------------------


def run_one_dtype(args, dtype: str) -> List[dict]:
    setup_torch(dtype, args.threads)
    hp = load_hyperparameters(args.hyperparameters)
    records = []
    for case in args.cases:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        if case == "train":
            rec = training_case(dtype, hp, args.data, args.train_steps, args.train_warmup, args.threads, args.device)
            msg = f"{rec['steps_per_s']:.2f} steps/s (step median {rec['step']['median_s'] * 1e3:.1f} ms)"
        else:
            rec = latency_case(case, dtype, hp, args.data, args.repeats, args.warmup, args.threads, args.stress,
                               args.device)
            msg = (f"model median {rec['model']['median_s'] * 1e3:.2f} ms (min {rec['model']['min_s'] * 1e3:.2f}), "
                   f"prep median {rec['prep']['median_s'] * 1e3:.2f} ms")
            if "model_stress" in rec:
                msg += f", model+stress median {rec['model_stress']['median_s'] * 1e3:.2f} ms"
        rec["wall_s_case"] = time.perf_counter() - t0
        # other processes on the machine make the times noisy; keep the load next to the numbers
        rec["loadavg_1min_before"] = load_before
        rec["loadavg_1min_after"] = os.getloadavg()[0]
        print(f"[{dtype}] {case:7s} params {rec['n_params']}: {msg}", flush=True)
        records.append(rec)
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("hyperparameters", help="JSON file of hyperparameters")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--dtype", nargs="+", default=["float64"], choices=["float32", "float64"],
                   help="one process per dtype when more than one is given")
    p.add_argument("--cases", nargs="+", default=ALL_CASES, choices=ALL_CASES)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per latency case")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--train-warmup", type=int, default=3)
    p.add_argument("--stress", action="store_true", help="also time energy+forces+stress on periodic cases")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:N]")
    p.add_argument("--data", default=None, help=f"data folder (default {structures.DEFAULT_DATA_DIR})")
    p.add_argument("--append", action="store_true",
                   help="keep the records already in --out, replacing those with the same (case, dtype)")
    args = p.parse_args(argv)

    if len(args.dtype) == 1:
        records = run_one_dtype(args, args.dtype[0])
    else:
        records = []
        for dtype in args.dtype:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "part.json")
                cmd = [sys.executable, os.path.abspath(__file__), args.hyperparameters, "--out", out, "--dtype", dtype,
                       "--cases", *args.cases, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                       "--train-steps", str(args.train_steps), "--train-warmup", str(args.train_warmup),
                       "--threads", str(args.threads), "--device", args.device]
                if args.stress:
                    cmd.append("--stress")
                if args.data:
                    cmd += ["--data", args.data]
                subprocess.run(cmd, check=True)
                with open(out) as f:
                    records += json.load(f)["records"]

    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)["records"]
        new_keys = {(r["case"], r["dtype"]) for r in records}
        records = [r for r in old if (r["case"], r["dtype"]) not in new_keys] + records
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "mace_torch_side", "records": records}, f, indent=1)
    print(f"wrote {args.out} ({len(records)} records)")


if __name__ == "__main__":
    main()
