"""Train mace-torch on acetylacetone for a fixed wall-clock budget and evaluate it on the 300 K test set.

Runs in the mace-torch virtual environment (see ``benchmarks/mace_torch_side.py`` for how to make it)::

    benchmarks/_work/torch-venv/bin/python benchmarks/mace_torch_train.py HP.json --minutes 30 \\
        --out benchmarks/_work/mace_torch_train.json [--dtype float64] [--threads 2] [--seed 0] \\
        [--energy-weight 1 --forces-weight 100] [--valid-fraction 0.1] [--save-model model.pt]

A small hand-written loop over mace's Python API, not ``mace_run_train`` (which stops after a number of
epochs, not after a time). Everything else is mace's: the model, data pipeline, loss, optimizer set-up and
the training step are built by ``mace_torch_side.training_setup`` and run by ``mace.tools.train.take_step``:

* data: ``acac/train_300K.xyz`` (500 frames; all of them train unless ``--valid-fraction`` holds some
  out), neighbour lists built once, batch size 5, reshuffled every epoch, last partial batch dropped;
* model: ``ScaleShiftMACE`` from the hyperparameter JSON (same keys as ``mace_torch_side.py``), E0s from
  ``acac/isolated_atoms.xyz``, scale = RMS of the training forces, shift 0;
* loss: ``WeightedEnergyForcesLoss`` = energy_weight × mean((ΔE / N_atoms)²) + forces_weight × mean(ΔF²)
  (weights 1 and 100 unless given); gradient-norm clipping at 10;
* optimizer: Adam with AMSGrad, lr 0.01, weight decay 5e-7 on mace's decay groups; EMA decay 0.99;
  with a validation set, mace's ``ReduceLROnPlateau`` (factor 0.8, patience 50 epochs) on the EMA
  validation loss after every epoch; without one the learning rate stays constant;
* stage two (``--stage-two-fraction f``, off by default): at the first epoch boundary past f of the
  budget, the loss becomes ``WeightedEnergyForcesLoss(1000, 100)`` and the learning rate 1e-3, as
  ``mace_run_train --swa`` does at ``start_swa`` (its defaults: ``--swa_energy_weight 1000
  --swa_forces_weight 100 --swa_lr 1e-3``, from epoch ``max_num_epochs // 4 * 3``); the plateau
  scheduler stops. mace anneals to swa_lr over one epoch (SWALR) and keeps a weight average that its
  EMA evaluation does not use; here the rate is set at once.

The wall-clock budget covers the training steps only (and the per-epoch validation, if any); it is
checked after every step, so the loop stops within one step of the budget. Data loading, neighbour
lists, statistics and model construction before it, and the final evaluation after it, are timed
separately. The final evaluation uses the EMA weights on ``acac/test_MD_300K.xyz`` (650 frames):
energy MAE/RMSE per configuration (meV), force MAE/RMSE per Cartesian component (meV/Å).

Output JSON: ``{"benchmark": "mace_torch_train", "versions", "threads", "dtype", "hyperparameters",
"budget_min", "setup_s", "train_s", "steps", "epochs", "steps_per_s", "final_lr", "epoch_log": [...],
"test": {...}, "train_eval": {...} (with --eval-train), "n_params", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mace_torch_side as side  # noqa: E402
import structures  # noqa: E402


def evaluate(model, data, batch_size: int = 32) -> dict:
    """Energy (per configuration) and force (per component) errors of ``model`` on mace ``AtomicData``."""
    import torch

    de, dea, df = [], [], []
    for batch in side.loader(data, batch_size):
        bd = batch.to_dict()
        out = model(bd, training=False, compute_force=True)
        n_at = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
        e_err = (out["energy"].detach() - batch.energy).double()
        de.append(e_err)
        dea.append(e_err / n_at.double())
        df.append((out["forces"].detach() - batch.forces).double().reshape(-1))
    de_t, dea_t, df_t = torch.cat(de), torch.cat(dea), torch.cat(df)
    return {
        "n_configs": int(de_t.numel()),
        "energy_mae_meV": float(de_t.abs().mean()) * 1e3,
        "energy_rmse_meV": float(de_t.square().mean().sqrt()) * 1e3,
        "energy_per_atom_mae_meV": float(dea_t.abs().mean()) * 1e3,
        "energy_per_atom_rmse_meV": float(dea_t.square().mean().sqrt()) * 1e3,
        "forces_mae_meV_per_A": float(df_t.abs().mean()) * 1e3,
        "forces_rmse_meV_per_A": float(df_t.square().mean().sqrt()) * 1e3,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("hyperparameters", help="JSON file of hyperparameters (keys as in mace_torch_side.py)")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the training loop")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy-weight", type=float, default=None, help="overrides the JSON (default 1)")
    p.add_argument("--forces-weight", type=float, default=None, help="overrides the JSON (default 100)")
    p.add_argument("--valid-fraction", type=float, default=0.0,
                   help="hold out this part of train_300K for validation and ReduceLROnPlateau (mace: 0.1)")
    p.add_argument("--stage-two-fraction", type=float, default=None,
                   help="start mace's stage two (weights 1000/100, lr 1e-3) at this fraction of the budget")
    p.add_argument("--swa-energy-weight", type=float, default=1000.0)
    p.add_argument("--swa-forces-weight", type=float, default=100.0)
    p.add_argument("--swa-lr", type=float, default=1e-3)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--eval-train", action="store_true", help="also evaluate the EMA model on the training set")
    p.add_argument("--save-model", default=None, help="torch.save the EMA-weight model here")
    p.add_argument("--data", default=None, help=f"data folder (default {structures.DEFAULT_DATA_DIR})")
    args = p.parse_args(argv)

    torch = side.setup_torch(args.dtype, args.threads)
    from mace.tools.train import take_step

    hp = side.load_hyperparameters(args.hyperparameters)
    if args.energy_weight is not None:
        hp["energy_weight"] = args.energy_weight
    if args.forces_weight is not None:
        hp["forces_weight"] = args.forces_weight

    t_setup = time.perf_counter()
    s = side.training_setup(hp, args.data, seed=args.seed, valid_fraction=args.valid_fraction)
    model, optimizer, ema, loss_fn = s["model"], s["optimizer"], s["ema"], s["loss_fn"]
    test_data = side.atomic_data(side.configurations(structures.acac_test_set(args.data)), s["z_table"],
                                 float(hp["cutoff"]))
    scheduler = None
    if s["valid_data"]:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer=optimizer, factor=0.8, patience=50)
    setup_s = time.perf_counter() - t_setup
    print(f"setup {setup_s:.1f} s: {len(s['data'])} train, {len(s['valid_data'])} valid, {len(test_data)} test; "
          f"{side.n_parameters(model)} parameters; avg_num_neighbors {s['avg_num_neighbors']:.3f}; "
          f"scale {s['scale']:.4f}", flush=True)

    device = torch.device("cpu")
    clip = float(hp["clip_grad"]) if hp.get("clip_grad") else None
    budget_s = 60.0 * args.minutes
    epoch_log = []
    steps = epochs = 0
    t0 = time.perf_counter()
    out_of_time = False
    model.train()
    stage_two_step = None
    while not out_of_time:
        if (args.stage_two_fraction is not None and stage_two_step is None
                and time.perf_counter() - t0 >= args.stage_two_fraction * budget_s):
            from mace import modules

            loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=args.swa_energy_weight,
                                                       forces_weight=args.swa_forces_weight)
            for group in optimizer.param_groups:
                group["lr"] = args.swa_lr
            scheduler = None
            stage_two_step = steps
            print(f"stage two from step {steps} ({time.perf_counter() - t0:.1f} s): weights "
                  f"{args.swa_energy_weight:g}/{args.swa_forces_weight:g}, lr {args.swa_lr:g}", flush=True)
        losses = []
        for batch in s["train_loader"]:
            loss, _ = take_step(model=model, loss_fn=loss_fn, batch=batch, optimizer=optimizer, ema=ema,
                                output_args=side.OUTPUT_ARGS, max_grad_norm=clip, device=device)
            losses.append(float(loss.detach()))
            steps += 1
            if time.perf_counter() - t0 >= budget_s:
                out_of_time = True
                break
        if not out_of_time:
            epochs += 1
        entry = {"epoch": epochs if not out_of_time else epochs + 1, "complete": not out_of_time,
                 "elapsed_s": time.perf_counter() - t0, "steps": steps,
                 "train_loss_mean": float(np.mean(losses)) if losses else None,
                 "lr": optimizer.param_groups[0]["lr"]}
        if s["valid_data"] and not out_of_time:
            with ema.average_parameters():
                v = evaluate(model, s["valid_data"], args.eval_batch_size)
            entry["valid"] = v
            if scheduler is not None:
                # mace steps the scheduler on the loss function evaluated on the validation set:
                vloss = (hp["energy_weight"] * (v["energy_per_atom_rmse_meV"] * 1e-3) ** 2
                         + hp["forces_weight"] * (v["forces_rmse_meV_per_A"] * 1e-3) ** 2)
                scheduler.step(vloss)
        epoch_log.append(entry)
        if entry["complete"]:
            print(f"epoch {epochs:4d}  {entry['elapsed_s']:7.1f} s  loss {entry['train_loss_mean']:.5f}"
                  + (f"  valid F MAE {entry['valid']['forces_mae_meV_per_A']:.2f} meV/Å" if "valid" in entry else ""),
                  flush=True)
    train_s = time.perf_counter() - t0

    t_eval = time.perf_counter()
    model.eval()
    with ema.average_parameters():
        test = evaluate(model, test_data, args.eval_batch_size)
        train_eval = evaluate(model, s["data"], args.eval_batch_size) if args.eval_train else None
        if args.save_model:
            torch.save(model, args.save_model)
    eval_s = time.perf_counter() - t_eval
    print(f"trained {train_s:.1f} s, {steps} steps, {epochs} full epochs; test (EMA): "
          f"E MAE {test['energy_mae_meV']:.2f} meV, F MAE {test['forces_mae_meV_per_A']:.2f} meV/Å "
          f"(RMSE {test['energy_rmse_meV']:.2f} / {test['forces_rmse_meV_per_A']:.2f})", flush=True)

    result = {
        "benchmark": "mace_torch_train",
        "implementation": "mace-torch",
        "method": "hand-written loop over mace.tools.train.take_step with a wall-clock check after every step",
        "versions": side.versions(),
        "threads": args.threads,
        "torch_num_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "seed": args.seed,
        "hyperparameters": hp,
        "hidden_irreps": str(side.hidden_irreps(int(hp["channels"]), int(hp["hidden_l_max"]))),
        "n_params": side.n_parameters(model),
        "avg_num_neighbors": s["avg_num_neighbors"],
        "atomic_inter_scale": s["scale"],
        "e0s_eV": {str(z): float(e) for z, e in zip(s["z_table"].zs, s["atomic_energies"])},
        "n_train": len(s["data"]),
        "n_valid": len(s["valid_data"]),
        "n_test": len(test_data),
        "budget_min": args.minutes,
        "setup_s": setup_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "steps": steps,
        "epochs": epochs,
        "steps_per_s": steps / train_s if train_s > 0 else None,
        "final_lr": optimizer.param_groups[0]["lr"],
        "stage_two": None if args.stage_two_fraction is None else {
            "fraction": args.stage_two_fraction, "energy_weight": args.swa_energy_weight,
            "forces_weight": args.swa_forces_weight, "lr": args.swa_lr, "from_step": stage_two_step},
        "loadavg_1min_at_end": os.getloadavg()[0],
        "epoch_log": epoch_log,
        "test": test,
        "train_eval": train_eval,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
