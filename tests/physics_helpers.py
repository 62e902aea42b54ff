"""Shared helpers for physics tests: random rotations with inversion, test structures, a small model."""

from __future__ import annotations

import numpy as np

from jace.data.configuration import Configuration


def random_orthogonal(rng: np.random.Generator, inversion: bool = True) -> np.ndarray:
    """A random 3x3 orthogonal matrix; with ``inversion`` its determinant is -1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if inversion else q


def random_cluster(rng, n_atoms: int, numbers=(29, 79), box: float = 4.0, min_dist: float = 1.6) -> Configuration:
    """A non-periodic cluster with atoms at least ``min_dist`` apart."""
    pos = []
    while len(pos) < n_atoms:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) > min_dist for q in pos):
            pos.append(p)
    nums = rng.choice(np.asarray(numbers), size=n_atoms)
    return Configuration(np.array(pos), nums, np.zeros((3, 3)), [False] * 3, source="cluster")


def random_crystal(rng, numbers=(29, 79), skew: float = 0.2, rattle: float = 0.1) -> Configuration:
    """A rattled 8-atom fcc-like triclinic cell (edges ~3.6 Å) that needs several periodic images at 5 Å."""
    a = 3.6
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = np.concatenate([frac * [1, 1, 0.5], frac * [1, 1, 0.5] + [0, 0, 0.5]])
    cell = a * (np.diag([1.0, 1.0, 2.0]) + skew * rng.uniform(-1, 1, (3, 3)))
    pos = frac @ cell + rng.normal(0, rattle, (len(frac), 3))
    nums = rng.choice(np.asarray(numbers), size=len(frac))
    return Configuration(pos, nums, cell, [True] * 3, source="crystal")
