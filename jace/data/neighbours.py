"""Neighbour lists with periodic boundary conditions, backed by well-kept libraries.

The convention everywhere in jace: an edge (i, j, S) means atom j is a neighbour of atom i with

    r_ij = positions[j] - positions[i] + S @ cell        (Å)

and |r_ij| < cutoff. Edges are directed (both i→j and j→i are present); an atom is never its own
neighbour with S = 0, but it can be its own periodic image (S ≠ 0) in small cells.

Backends (all give identical lists; ``benchmarks/neighbours.py`` measures them):
  * ``"matscipy"`` (default): C implementation with cell binning; any cell, many images.
  * ``"vesin"``: C++ implementation; any cell.
  * ``"ase"``: ``ase.neighborlist.primitive_neighbor_list`` (numpy), the reference in tests.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("matscipy", "vesin", "ase")


def _check_inputs(positions, cell, pbc, cutoff, source):
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"{source}: cutoff must be a positive number of Å, got {cutoff!r}")
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{source}: positions contain NaN or inf")
    if pbc.any():
        volume = abs(np.linalg.det(cell))
        if not np.isfinite(volume) or volume < 1e-8:
            raise ValueError(
                f"{source}: periodic structure (pbc={pbc.tolist()}) has a degenerate cell of volume {volume:.3g} Å³"
            )
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-6):
            raise ValueError(f"{source}: periodic direction with a zero-length lattice vector")
    return positions, cell, pbc


def _open_box(positions, cell, pbc, cutoff):
    """For structures that are not periodic in every direction, give libraries a usable box.

    Non-periodic directions whose lattice vector is zero (molecules) are replaced by a box that
    encloses all atoms with a margin of one cutoff; positions are shifted into it. Shifts S along
    non-periodic directions are always zero, so the cell used for them never enters r_ij.
    """
    if pbc.all():
        return positions, cell
    if pbc.any():
        # Keep the periodic vectors; complete the basis with orthogonal directions if needed.
        if abs(np.linalg.det(cell)) > 1e-8:
            return positions, cell
        raise ValueError("partially periodic structures need a full, non-degenerate cell")
    lo = positions.min(axis=0) - cutoff
    hi = positions.max(axis=0) + cutoff
    return positions - lo, np.diag(hi - lo)


def neighbour_list(positions, cell, pbc, cutoff: float, backend: str = "matscipy", source: str = "<structure>"):
    """All directed pairs closer than ``cutoff``.

    Args:
      positions: [n_atoms, 3] Å.
      cell: [3, 3] lattice vectors as rows, Å.
      pbc: [3] bool.
      cutoff: Å, > 0.
      backend: one of ``BACKENDS``.
      source: a name used in error messages (file and index).

    Returns:
      (i, j, S): centre indices [n_edges] int64, neighbour indices [n_edges] int64, integer cell
      shifts [n_edges, 3] int64, sorted by (i, j, S) so that every backend gives the same order.
    """
    positions, cell, pbc = _check_inputs(positions, cell, pbc, cutoff, source)
    n = positions.shape[0]
    if n == 0:
        raise ValueError(f"{source}: structure has no atoms")
    if backend == "ase":
        from ase.neighborlist import primitive_neighbor_list

        i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False)
    elif backend == "matscipy":
        from matscipy.neighbours import neighbour_list as _nl

        pos, box = _open_box(positions, cell, pbc, cutoff)
        i, j, S = _nl("ijS", positions=pos, cutoff=float(cutoff), cell=box, pbc=pbc)
    elif backend == "vesin":
        from vesin import NeighborList

        pos, box = _open_box(positions, cell, pbc, cutoff)
        i, j, S = NeighborList(cutoff=float(cutoff), full_list=True).compute(
            points=pos, box=box, periodic=pbc, quantities="ijS"
        )
    else:
        raise ValueError(f"unknown neighbour-list backend {backend!r}; choose one of {BACKENDS}")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    S = np.asarray(S, dtype=np.int64).reshape(-1, 3)
    # Exact cutoff filter: libraries differ on pairs at exactly r = cutoff.
    # (S @ cell written out: an integer [n_edges, 3] @ [3, 3] matmul is several times slower in numpy.)
    r = positions[j] - positions[i] + S[:, 0:1] * cell[0] + S[:, 1:2] * cell[1] + S[:, 2:3] * cell[2]
    d = np.sqrt(np.einsum("ea,ea->e", r, r))
    keep = (d < cutoff) & ~((i == j) & np.all(S == 0, axis=1))
    i, j, S = i[keep], j[keep], S[keep]
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    return i[order], j[order], S[order]
