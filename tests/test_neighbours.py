"""Every neighbour-list backend gives exactly ase's primitive_neighbor_list, for any cell."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.neighborlist import primitive_neighbor_list
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jace.data.neighbours import BACKENDS, neighbour_list

HYP = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def edge_set(i, j, S):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(S).tolist())))


def reference(positions, cell, pbc, cutoff):
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    i, j, S = primitive_neighbor_list("ijS", pbc, np.asarray(cell), positions, cutoff, self_interaction=False)
    return edge_set(i, j, S)


def check_all_backends(positions, cell, pbc, cutoff):
    """All backends equal ase's list; the list is sorted, within the cutoff and symmetric."""
    ref = reference(positions, cell, pbc, cutoff)
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    for backend in BACKENDS:
        i, j, S = neighbour_list(positions, cell, pbc, cutoff, backend=backend)
        got = edge_set(i, j, S)
        assert got == ref, (backend, len(got), len(ref), sorted(got ^ ref)[:5])
        assert len(got) == len(i)  # no duplicates
        order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
        np.testing.assert_array_equal(order, np.arange(len(i)))
        if len(i):
            d = np.linalg.norm(positions[j] - positions[i] + S @ np.asarray(cell), axis=1)
            assert d.max() < cutoff
            assert np.all(S[:, ~pbc_arr] == 0)  # no shifts along open directions
        assert edge_set(j, i, -S) == got  # every edge has its reverse
    return ref


# ----------------------------------------------------------------------------------------------
# Hypothesis: random cells, positions, periodicity.
# ----------------------------------------------------------------------------------------------


@st.composite
def skewed_cells(draw, min_len=1.5, max_len=3.0):
    raw = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=9, max_size=9)), dtype=np.float64).reshape(3, 3)
    norms = np.linalg.norm(raw, axis=1)
    assume(np.all(norms > 0.1))
    directions = raw / norms[:, None]
    # Skewed but not nearly flat: |det| of the unit directions bounded below.
    assume(abs(np.linalg.det(directions)) > 0.3)
    lengths = np.array(draw(st.lists(st.floats(min_len, max_len), min_size=3, max_size=3)))
    return directions * lengths[:, None]


@st.composite
def fractional_positions(draw, max_atoms=5, lo=-0.5, hi=1.5):
    n = draw(st.integers(1, max_atoms))
    values = draw(st.lists(st.floats(lo, hi), min_size=3 * n, max_size=3 * n))
    return np.array(values, dtype=np.float64).reshape(n, 3)


@HYP
@given(cell=skewed_cells(), frac=fractional_positions(), cutoff=st.floats(2.0, 5.0))
def test_small_skewed_periodic_cells_need_many_images(cell, frac, cutoff):
    positions = frac @ cell  # also outside the cell: backends must not assume wrapped positions
    ref = check_all_backends(positions, cell, True, cutoff)
    # Sanity: with cell vectors ≤ 3 Å and a cutoff ≥ 2 Å an atom always sees some periodic image.
    assert len(ref) > 0
    assert max(max(abs(s) for s in S) for _, _, S in ref) >= 1


@HYP
@given(
    cell=skewed_cells(min_len=2.5, max_len=6.0),
    frac=fractional_positions(max_atoms=8, lo=-1.0, hi=2.0),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    cutoff=st.floats(1.5, 4.0),
)
def test_mixed_periodicity(cell, frac, pbc, cutoff):
    check_all_backends(frac @ cell, cell, list(pbc), cutoff)


@HYP
@given(
    coords=st.lists(st.floats(-8.0, 8.0), min_size=3, max_size=60).filter(lambda v: len(v) % 3 == 0),
    cutoff=st.floats(1.0, 6.0),
)
def test_molecules_without_cell(coords, cutoff):
    positions = np.array(coords, dtype=np.float64).reshape(-1, 3)
    check_all_backends(positions, np.zeros((3, 3)), False, cutoff)


# ----------------------------------------------------------------------------------------------
# Fixed cases.
# ----------------------------------------------------------------------------------------------


def test_silicon_diamond_counts():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    ref = check_all_backends(atoms.positions, atoms.cell[:], atoms.pbc, 2.5)
    assert len(ref) == 8 * 4  # four nearest neighbours each at 2.35 Å


def test_one_atom_fcc_primitive_cell_sees_only_its_images():
    atoms = bulk("Cu", "fcc", a=3.6)  # 1 atom, 60° cell, 2.55 Å vectors
    ref = check_all_backends(atoms.positions, atoms.cell[:], True, 5.0)
    # Shells of fcc within 5 Å: 12 + 6 + 24 + 12 = 54 images (at 2.55, 3.6, 4.41, 5.09 > 5: 12 excluded).
    assert len(ref) == 12 + 6 + 24
    assert all(i == 0 and j == 0 and S != (0, 0, 0) for i, j, S in ref)


def test_ethanol_molecule_and_single_atom():
    atoms = molecule("CH3CH2OH")
    ref = check_all_backends(atoms.positions, np.zeros((3, 3)), False, 1.6)
    assert len(ref) == 2 * 8  # eight covalent bonds (C-C 1.51 Å, C-O 1.43 Å, six X-H)
    for backend in BACKENDS:
        i, j, S = neighbour_list(np.zeros((1, 3)), np.zeros((3, 3)), False, 5.0, backend=backend)
        assert len(i) == 0 and S.shape == (0, 3)


def test_slab_with_atoms_outside_the_cell_along_the_open_direction():
    cell = np.array([[2.5, 0.0, 0.0], [1.25, 2.165, 0.0], [0.0, 0.0, 4.0]])
    positions = np.array([[0.0, 0.0, -3.0], [1.25, 0.7, 0.0], [0.0, 0.0, 9.0], [0.3, 0.2, 2.0]])
    ref = check_all_backends(positions, cell, [True, True, False], 4.5)
    assert any(S[2] == 0 and S[:2] != (0, 0) for _, _, S in ref)


def test_cutoff_is_strict_for_every_backend():
    cutoff = 3.0
    for d, expected in ((cutoff - 1e-9, 2), (cutoff + 1e-9, 0)):
        positions = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
        for backend in BACKENDS:
            i, _, _ = neighbour_list(positions, np.zeros((3, 3)), False, cutoff, backend=backend)
            assert len(i) == expected, (backend, d)


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_raise_clear_errors(backend):
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    cell = np.eye(3) * 4.0
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        neighbour_list(pos, cell, True, -1.0, backend=backend, source="train.xyz:3")
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        neighbour_list(pos, cell, True, 0.0, backend=backend)
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        neighbour_list(pos, cell, True, float("nan"), backend=backend)
    with pytest.raises(ValueError, match=r"train\.xyz:3: positions contain NaN"):
        neighbour_list(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), cell, True, 3.0, backend=backend,
                       source="train.xyz:3")
    flat = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 3.0, 0.0]])  # third vector in the plane
    with pytest.raises(ValueError, match="degenerate cell"):
        neighbour_list(pos, flat, True, 3.0, backend=backend)
    with pytest.raises(ValueError, match="degenerate cell"):
        neighbour_list(pos, np.zeros((3, 3)), True, 3.0, backend=backend)
    with pytest.raises(ValueError, match="no atoms"):
        neighbour_list(np.zeros((0, 3)), cell, True, 3.0, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown neighbour-list backend 'kdtree'"):
        neighbour_list(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.eye(3) * 4, True, 3.0, backend="kdtree")
