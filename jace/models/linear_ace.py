"""Linear ACE: E_i = E0(z_i) + Σ_v c_{z_i v} B_{i v}, fitted by regularised linear least squares.

The atomic basis uses a one-hot element channel (A_{i, z n l m}), so basis functions resolve the
neighbours' elements and the coefficients the centre's element. Element-pair-dependent radial
functions R_{n l z_i z_j} = Σ_k W_{z_i z_j l n k} g_k (``basis.radial.radial_functions``) would add
nothing here: with fixed invertible W they span the same space as the element-resolved basis, so the
linear model uses g_n directly; learnable W belongs to the message-passing models.

Fitting: the design matrix rows are energies, forces and virials of every training configuration
(``FitSpec`` documents weights and the prior). Feature derivatives use the edge-local chain rule
(``batch_design_edges``): one forward-mode JVP of the product basis per edge and direction, so the
cost is linear in the number of edges. The least-squares problem is solved by a streaming QR, so
memory stays O(n_features²) plus one chunk of rows.
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jace.basis.angular import safe_norm, spherical_harmonics, unit_vectors
from jace.basis.atomic import atomic_basis_one_hot
from jace.basis.product import OneParticle, ProductBasis, build_product_basis, fold_coefficients, monomials, couple
from jace.basis.radial import radial_basis
from jace.data.configuration import Configuration
from jace.data.graph import (
    SpeciesMap,
    edge_graph_index,
    edge_mask,
    edge_vectors,
    graphs_from_configurations,
    node_graph_index,
    node_mask,
)
from jace.models.design import FitSpec, LinearACESpec, RadialSpec
from jace.models.potential import predict


@functools.lru_cache(maxsize=32)
def product_basis_for(spec: LinearACESpec, irreps: tuple = ((0, 1),)) -> ProductBasis:
    op = OneParticle(len(spec.elements), spec.radial.n_max, spec.l_max)
    return build_product_basis(op, spec.correlation, spec.max_degree, spec.w_l, irreps)


def atomic_basis(spec: LinearACESpec, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """A_{i, z n l m} flattened: [n_nodes, n_elements · n_max · (l_max+1)²]."""
    positions = graph.nodes["positions"]
    vec = edge_vectors(positions, graph.globals["cell"], graph)  # [n_edges, 3]
    r = safe_norm(vec)
    sh = spherical_harmonics(unit_vectors(vec, r), spec.l_max)  # [n_edges, (l+1)²]
    species = graph.nodes["species"]
    g = radial_basis(r, spec.radial, spec.cutoff, _edge_r0(spec, species[graph.receivers], species[graph.senders]))
    n_nodes = positions.shape[0]
    a = atomic_basis_one_hot(
        g, sh, species[graph.senders], graph.receivers, edge_mask(graph), n_nodes, len(spec.elements), spec.l_max
    )
    return a.reshape(n_nodes, -1)


@functools.lru_cache(maxsize=32)
def _r0_table(spec: LinearACESpec) -> np.ndarray:
    from jace.basis.radial import pair_r0_table

    return pair_r0_table(SpeciesMap.from_symbols(spec.elements).atomic_numbers, spec.radial.r0_scale)


def _edge_r0(spec: LinearACESpec, species_i, species_j):
    """Per-edge r0 (Å) of the radial transform, or None when the radial basis is untransformed."""
    if spec.radial.transform == "none":
        return None
    return jnp.asarray(_r0_table(spec))[species_i, species_j]


def invariant_features(spec: LinearACESpec, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """B_{i v} (L = 0 invariants): [n_nodes, n_basis]."""
    basis = product_basis_for(spec)
    return couple(basis, monomials(basis, atomic_basis(spec, graph)), (0, 1))[..., 0]


def equivariant_features(spec: LinearACESpec, graph: jraph.GraphsTuple, irrep: tuple[int, int]) -> jnp.ndarray:
    """B_{i η L M} of one irrep (L, parity): [n_nodes, n_functions, 2L+1], in e3nn's real basis."""
    basis = product_basis_for(spec, (tuple(irrep),))
    return couple(basis, monomials(basis, atomic_basis(spec, graph)), tuple(irrep))


def site_energies(spec: LinearACESpec, params, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_nodes] site energies, eV. params: {"e0": [n_species], "folded": per ν [n_species, n_AA_ν]}."""
    basis = product_basis_for(spec)
    species = graph.nodes["species"]
    aa = monomials(basis, atomic_basis(spec, graph))
    e = params["e0"][species]
    for aa_nu, c_nu in zip(aa, params["folded"]):
        e = e + jnp.sum(aa_nu * c_nu[species], axis=-1)
    return e


class LinearACEModel:
    """A fitted linear ACE potential.

    Attributes:
      spec: the LinearACESpec.
      e0: [n_species] reference energies, eV.
      coefficients: [n_species, n_basis] coefficients of the invariants B, eV.
    """

    model_type = "linear_ace"

    def __init__(self, spec: LinearACESpec, e0, coefficients, metadata: dict | None = None):
        self.spec = spec
        self.species = SpeciesMap.from_symbols(spec.elements)
        self.basis = product_basis_for(spec)
        n_b = self.basis.n_functions()
        self.e0 = np.asarray(e0, dtype=np.float64).reshape(len(spec.elements))
        self.coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(spec.elements), n_b)
        self.metadata = dict(metadata or {})
        self._predict = jax.jit(functools.partial(predict, self.site_energy_fn), static_argnames=("compute_stress",))

    @property
    def cutoff(self) -> float:
        return float(self.spec.cutoff)

    @property
    def n_basis(self) -> int:
        return self.basis.n_functions()

    def site_energy_fn(self, params, graph):
        return site_energies(self.spec, params, graph)

    @property
    def params(self):
        """{"e0": [n_species], "folded": per ν [n_species, n_AA_ν]} in the default float dtype.

        Folding the coefficients into monomial space is done once per dtype and cached; the cache is
        keyed on the coefficient values too, so assigning new coefficients is safe.
        """
        dtype = jnp.zeros(()).dtype  # float64 when x64 is enabled, float32 otherwise
        key = (str(dtype), self.e0.tobytes(), self.coefficients.tobytes())
        cached = getattr(self, "_params_cache", None)
        if cached is None or cached[0] != key:
            params = {
                "e0": jnp.asarray(self.e0, dtype=dtype),
                "folded": [jnp.asarray(f, dtype=dtype) for f in fold_coefficients(self.basis, self.coefficients)],
            }
            self._params_cache = (key, params)
        return self._params_cache[1]

    def predict_graph(self, graph: jraph.GraphsTuple, compute_stress: bool = True):
        return self._predict(self.params, graph, compute_stress=compute_stress)

    # -- safe serialisation protocol (jace.models.io) ------------------------------------------
    def to_state(self):
        spec = _spec_to_dict(self.spec)
        arrays = {"e0": self.e0, "coefficients": self.coefficients}
        return spec, arrays, {**self.metadata, "n_basis": self.n_basis}

    @classmethod
    def from_state(cls, spec: dict, arrays: dict, metadata: dict):
        s = _spec_from_dict(spec)
        model = cls(s, arrays["e0"], arrays["coefficients"], metadata)
        if "n_basis" in metadata and int(metadata["n_basis"]) != model.n_basis:
            raise ValueError(
                f"model file has {metadata['n_basis']} basis functions but this jace builds {model.n_basis}"
            )
        return model


def _spec_to_dict(spec: LinearACESpec) -> dict:
    import dataclasses

    d = dataclasses.asdict(spec)
    d["elements"] = list(spec.elements)
    d["max_degree"] = list(spec.max_degree)
    return d


def _spec_from_dict(d: dict) -> LinearACESpec:
    d = dict(d)
    d["radial"] = RadialSpec(**d.get("radial", {}))
    d["elements"] = tuple(d["elements"])
    d["max_degree"] = tuple(float(x) for x in d["max_degree"])
    return LinearACESpec(**d)


# ---------------------------------------------------------------------------------------------
# Design matrix
# ---------------------------------------------------------------------------------------------


def _edge_geometry(spec: LinearACESpec, vec: jnp.ndarray, r0) -> jnp.ndarray:
    """φ(r) = g_n(r) Y_lm(r̂) for one edge vector [3] → [n_max, (l_max+1)²]."""
    r = safe_norm(vec)
    sh = spherical_harmonics(unit_vectors(vec, r), spec.l_max)
    return radial_basis(r, spec.radial, spec.cutoff, r0)[:, None] * sh[None, :]


@functools.partial(jax.jit, static_argnames=("spec", "edge_chunk"))
def batch_design_edges(spec: LinearACESpec, graph: jraph.GraphsTuple, edge_chunk: int = 1024):
    """Design-matrix features of a padded batch by the edge-local chain rule (cost linear in edges).

    For every edge e = (i ← j) the derivative ∂B_i/∂r_e is one forward-mode JVP of the product basis
    of atom i along ∂A_i/∂r_e = ∂φ(r_e)/∂r_e (only neighbour j's element channel). Forces follow from
    r_e = r_j − r_i, virials from W = −Σ_e r_e ⊗ ∂E/∂r_e (symmetrised).

    Returns:
      energy_x: [n_graphs, n_feat]; force_x: [n_nodes, 3, n_feat] (= −∂/∂r_a);
      virial_x: [n_graphs, 3, 3, n_feat] (= −∂/∂ε), with n_feat = n_species · n_basis ordered (z_i, v).
    """
    basis = product_basis_for(spec)
    n_s = len(spec.elements)
    positions = graph.nodes["positions"]
    species = graph.nodes["species"]
    n_nodes, n_graph = positions.shape[0], graph.n_node.shape[0]
    a_flat = atomic_basis(spec, graph)  # [n_nodes, n_A]
    n_b = basis.n_functions()
    b = couple(basis, monomials(basis, a_flat))[..., 0]  # [n_nodes, n_b]
    b = jnp.where(node_mask(graph)[:, None], b, 0.0)
    node_graph = node_graph_index(graph)
    energy_x = jax.ops.segment_sum(b, node_graph * n_s + species, num_segments=n_graph * n_s).reshape(n_graph, -1)

    vec = edge_vectors(positions, graph.globals["cell"], graph)  # [n_edges, 3]
    n_edges = vec.shape[0]
    n_rad, n_lm = spec.radial.n_max, (spec.l_max + 1) ** 2

    def b_of_a(a):  # [n_A] -> [n_b]
        return couple(basis, monomials(basis, a[None]))[0, :, 0]

    r0_tab = jnp.asarray(_r0_table(spec), dtype=positions.dtype)

    def per_edge(args):
        v, i, zj, m = args
        r0 = r0_tab[species[i], zj] if spec.radial.transform != "none" else None
        dphi = jax.jacfwd(lambda x: _edge_geometry(spec, x, r0))(v)  # [n_rad, n_lm, 3]
        dphi = jnp.where(m, dphi, 0.0)
        a_i = a_flat[i]

        def along(c):
            t = jnp.zeros((n_s, n_rad, n_lm), a_i.dtype).at[zj].set(dphi[..., c]).reshape(-1)
            return jax.jvp(b_of_a, (a_i,), (t,))[1]

        return jax.vmap(along)(jnp.arange(3))  # [3, n_b]: ∂B_i/∂r_e

    pad = (-n_edges) % edge_chunk
    args = (
        jnp.pad(vec, ((0, pad), (0, 0))),
        jnp.pad(graph.receivers, (0, pad)),
        jnp.pad(species[graph.senders], (0, pad)),
        jnp.pad(edge_mask(graph), (0, pad)),
    )
    d_edge = jax.lax.map(per_edge, args, batch_size=edge_chunk)[:n_edges]  # [n_edges, 3, n_b]
    zi = species[graph.receivers]
    # −∂E/∂r_a: + for the centre i (r_e = r_j − r_i), − for the neighbour j; features indexed (z_i, v)
    seg_i = graph.receivers * n_s + zi
    seg_j = graph.senders * n_s + zi
    fx = jax.ops.segment_sum(d_edge, seg_i, num_segments=n_nodes * n_s) - jax.ops.segment_sum(
        d_edge, seg_j, num_segments=n_nodes * n_s
    )
    force_x = jnp.moveaxis(fx.reshape(n_nodes, n_s, 3, n_b), 1, 2).reshape(n_nodes, 3, n_s * n_b)
    w = -jnp.einsum("ea,ebv->eabv", vec, d_edge)
    w = 0.5 * (w + jnp.swapaxes(w, 1, 2))
    seg_g = edge_graph_index(graph) * n_s + zi
    wx = jax.ops.segment_sum(w, seg_g, num_segments=n_graph * n_s).reshape(n_graph, n_s, 3, 3, n_b)
    virial_x = jnp.moveaxis(wx, 1, 3).reshape(n_graph, 3, 3, n_s * n_b)
    return energy_x, force_x, virial_x


def smoothness_prior(basis: ProductBasis, spec: LinearACESpec, fit: FitSpec) -> np.ndarray:
    """Γ_v per basis function: (Σ_ξ (n_ξ + 1) + w_l l_ξ(l_ξ + 1))^p for "smoothness", 1 for "ridge"."""
    info = basis.info[(0, 1)]
    if fit.regulariser == "ridge":
        return np.ones(len(info["nu"]))
    return (info["n_sum"] + spec.w_l * info["ll_sum"]) ** fit.smoothness_p


def gram(a: np.ndarray, block: int = 4096) -> np.ndarray:
    """aᵀa [n, n] for a [m, n], as column blocks of general matrix products.

    ``a.T @ a`` would use BLAS syrk, which crashes (segfault) in the OpenBLAS 0.3.31 that numpy 2.4
    bundles once n reaches about 18,000 (seen with 4,100 × 17,970 here). The blocked gemm form does
    not crash; it does twice syrk's flops (33 s for that array on 2 cores, against 27 s for one gemm
    with a copy of ``a``, which would need a second [m, n] array in memory).
    """
    out = np.empty((a.shape[1], a.shape[1]), dtype=np.result_type(a.dtype, np.float64))
    for s in range(0, a.shape[1], block):
        out[:, s : s + block] = a.T @ np.ascontiguousarray(a[:, s : s + block])
    return out


def cholesky_lower(a: np.ndarray, block: int = 2048) -> np.ndarray:
    """In-place Cholesky factor L (lower triangle of ``a``; the upper triangle is left unspecified) of
    a symmetric positive-definite [n, n] matrix, of which only the lower triangle is read.

    Left-looking and blocked: each block column is updated by one general matrix product, then the
    diagonal block is factorised by LAPACK potrf and the panel below it by a triangular solve. LAPACK's
    own potrf calls syrk, which crashes multi-threaded in numpy/scipy's OpenBLAS 0.3.31 once n is large
    (seen at n = 26,600; see ``gram``); n³/3 flops, like potrf. Raises ``numpy.linalg.LinAlgError`` if
    ``a`` is not numerically positive definite.
    """
    import scipy.linalg

    n = a.shape[0]
    for k in range(0, n, block):
        e = min(k + block, n)
        if k:
            a[k:, k:e] -= a[k:, :k] @ np.ascontiguousarray(a[k:e, :k].T)
        a[k:e, k:e] = scipy.linalg.cholesky(a[k:e, k:e], lower=True, check_finite=False)
        if e < n:
            a[e:, k:e] = scipy.linalg.solve_triangular(a[k:e, k:e], a[e:, k:e].T, lower=True, check_finite=False).T
    return a


class IncrementalQR:
    """Weighted least squares by streaming QR of the augmented matrix [X | y].

    Only the triangular factor of [X | y] is kept ([n+1, n+1]): its leading block is R and its last
    column is Qᵀy, so Q is never formed. Rows are buffered (up to ``buffer_elements`` numbers, and at
    least n rows) so that each update is one large LAPACK QR; total cost O(rows · n²), without the
    squared condition number of the normal equations.
    """

    def __init__(self, n: int, buffer_elements: int = 200_000_000):
        self.n = n
        self.r_aug = np.zeros((0, n + 1))
        self.n_rows = 0
        self._buf: list = []
        self._buffered = 0
        self._max_rows = max(n + 1, buffer_elements // (n + 1))

    def add(self, x: np.ndarray, y: np.ndarray):
        if len(y) == 0:
            return
        self._buf.append(np.hstack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)[:, None]]))
        self._buffered += len(y)
        self.n_rows += len(y)
        if self._buffered >= self._max_rows:
            self._flush()

    def _flush(self):
        if not self._buffered:
            return
        self.r_aug = np.linalg.qr(np.vstack([self.r_aug, *self._buf]), mode="r")
        self._buf, self._buffered = [], 0

    @property
    def r(self) -> np.ndarray:
        self._flush()
        return self.r_aug[: self.n, : self.n]

    @property
    def qty(self) -> np.ndarray:
        self._flush()
        return self.r_aug[: self.n, self.n]

    def solve(self, lam: float = 0.0, gamma: np.ndarray | None = None) -> np.ndarray:
        """argmin_c |X c - y|² + lam |Γ c|² (Γ diagonal, given as a vector)."""
        import scipy.linalg

        r, qty = self.r, self.qty
        if r.shape[0] < self.n and lam <= 0:
            raise ValueError(
                f"{r.shape[0]} least-squares rows for {self.n} features: add data or a regulariser (fit.lam > 0)"
            )
        if lam > 0:
            g = np.ones(self.n) if gamma is None else gamma
            stacked = np.vstack([np.hstack([r, qty[:, None]]), np.hstack([np.sqrt(lam) * np.diag(g), np.zeros((self.n, 1))])])
            ra = np.linalg.qr(stacked, mode="r")
            r, qty = ra[: self.n, : self.n], ra[: self.n, self.n]
        return scipy.linalg.solve_triangular(r, qty, lower=False)

    def ridge_path(self, gamma: np.ndarray):
        """A function lam -> coefficients, from one eigendecomposition of Γ⁻¹ RᵀR Γ⁻¹ (for scanning λ).

        Accuracy degrades for lam far below eps · (largest eigenvalue); use ``solve`` for the final fit.
        """
        r, qty = self.r, self.qty
        rg = r / gamma[None, :]
        w, v = np.linalg.eigh(gram(rg))
        rhs = v.T @ (rg.T @ qty)
        return lambda lam: (v @ (rhs / (np.maximum(w, 0.0) + lam))) / gamma


class DualRidge:
    """Regularised least squares in the dual (kernel) form, for design matrices wider than tall.

    argmin_c |X c − y|² + λ |Γ c|² has the solution c = Γ⁻² Xᵀ α with (K + λ I) α = y and
    K = X Γ⁻² Xᵀ [m, m] (m rows). When n_features > m this needs O(m² + m·n) memory and O(m²·n) time
    instead of the primal O(n²) and O(m·n²): ethanol with 950 configurations has m = 26,600 rows
    whatever the basis size.

    Storage, chosen so that the rows may be far larger than memory:
    - the rows live in a float64 file (``np.memmap`` under ``directory``, a temporary folder by
      default) laid out in column blocks, [n_blocks, m, column_block] (the last block zero-padded), so
      the kernel reads the file once, sequentially, whatever the page cache holds;
    - the kernel is written to the same folder once computed, and each λ factorises a fresh copy read
      back from it, so only one m × m array is held in memory at a time.
    Each λ costs one Cholesky factorisation of K + λI (m³/3 flops); like the normal equations, the
    kernel squares the condition number, so λ below about eps · ‖K‖ fails (``solve`` raises).
    """

    def __init__(self, n: int, n_rows: int, directory: str | None = None, column_block: int | None = None):
        import tempfile

        self.n, self.m = int(n), int(n_rows)
        # default: blocks of about 2**27 numbers (1 GiB), the memory the kernel holds besides K
        cb = int(column_block) if column_block else max(64, (1 << 27) // max(self.m, 1))
        self.column_block = max(1, min(cb, self.n))
        n_blocks = -(-self.n // self.column_block)
        self._dir = tempfile.TemporaryDirectory(dir=directory, prefix="jace-dual-")
        self.x = np.lib.format.open_memmap(
            f"{self._dir.name}/rows.npy", mode="w+", dtype=np.float64, shape=(n_blocks, self.m, self.column_block)
        )
        self.y = np.zeros(self.m)
        self.n_rows = 0
        self._kernel_key: bytes | None = None

    def _blocks(self):
        """(block index, first column, number of columns) for each column block."""
        cb = self.column_block
        return [(b, s, min(cb, self.n - s)) for b, s in enumerate(range(0, self.n, cb))]

    def add(self, x: np.ndarray, y: np.ndarray):
        """Append rows x [k, n] with targets y [k]."""
        k = len(y)
        if self.n_rows + k > self.m:
            raise ValueError(f"DualRidge was sized for {self.m} rows; adding {k} more to {self.n_rows} overflows it")
        if x.shape != (k, self.n):
            raise ValueError(f"DualRidge rows must be [{k}, {self.n}], got {x.shape}")
        for b, s, w in self._blocks():
            self.x[b, self.n_rows : self.n_rows + k, :w] = x[:, s : s + w]
        self.y[self.n_rows : self.n_rows + k] = y
        self.n_rows += k
        self._kernel_key = None

    def _check_full(self):
        if self.n_rows != self.m:
            raise ValueError(f"DualRidge holds {self.n_rows} of the {self.m} rows it was sized for")

    @property
    def _kernel_path(self) -> str:
        return f"{self._dir.name}/kernel.npy"

    def kernel(self, gamma: np.ndarray, row_block: int = 2048) -> np.ndarray:
        """K = X Γ⁻² Xᵀ [m, m], lower triangle only (the upper one is zero), a new array on each call.

        Computed as Σ_b (X_b Γ_b⁻¹)(X_b Γ_b⁻¹)ᵀ over the stored column blocks (one sequential pass over
        the rows file; the lower triangle in row blocks of general matrix products, ≈ m²·n flops, as
        syrk would do, which crashes in OpenBLAS 0.3.31: see ``gram``). The result is kept on disk for
        the last Γ and read back by later calls.
        """
        self._check_full()
        key = np.asarray(gamma, dtype=np.float64).tobytes()
        if self._kernel_key == key:
            return np.load(self._kernel_path)
        self._kernel_key = None
        inv = 1.0 / np.asarray(gamma, dtype=np.float64)
        k = np.zeros((self.m, self.m))
        for b, s, w in self._blocks():
            xb = np.array(self.x[b, :, :w])
            xb *= inv[None, s : s + w]
            for r in range(0, self.m, row_block):
                e = min(r + row_block, self.m)
                k[r:e, :e] += xb[r:e] @ xb[:e].T
            del xb
        np.save(self._kernel_path, k)
        self._kernel_key = key
        return k

    def solve(self, lam: float, gamma: np.ndarray | None = None, row_scale: np.ndarray | None = None) -> np.ndarray:
        """c = Γ⁻² Xᵀ S (S K S + λ I)⁻¹ S y, the ridge solution for the rows S X and targets S y.

        ``row_scale`` (S, [m], default ones) re-weights stored rows without recomputing the kernel, for
        example a different energy weight: scale the energy rows by w_new / w_assembled (the rows'
        kinds are ``assemble_linear_system``'s info["row_kinds"]). Raises
        ``numpy.linalg.LinAlgError`` if S K S + λI is not numerically positive definite.
        """
        import scipy.linalg

        if not lam > 0:
            raise ValueError(f"the dual form needs λ > 0, got {lam!r}")
        g = np.ones(self.n) if gamma is None else np.asarray(gamma, dtype=np.float64)
        s = np.ones(self.m) if row_scale is None else np.asarray(row_scale, dtype=np.float64)
        if s.shape != (self.m,) or not np.all(np.isfinite(s)):
            raise ValueError(f"row_scale must be {self.m} finite numbers, got shape {s.shape}")
        a = self.kernel(g)  # a fresh array: factorised in place
        if row_scale is not None:
            a *= s[:, None]
            a *= s[None, :]
        a[np.diag_indices_from(a)] += lam
        alpha = scipy.linalg.cho_solve((cholesky_lower(a), True), s * self.y, check_finite=False)
        del a
        v = s * alpha
        c = np.empty(self.n)
        for b, st, w in self._blocks():
            c[st : st + w] = np.asarray(self.x[b, :, :w]).T @ v
        return c / g**2

    def close(self):
        self._kernel_key = None
        del self.x
        self._dir.cleanup()


def _check_labels(configs: Sequence[Configuration], fit: FitSpec):
    for c in configs:
        we, wf, ws = fit.weights_for(c.config_type)
        if c.energy is None and we * c.energy_weight * c.weight > 0:
            raise ValueError(f"{c.source}: configuration has no energy label but the energy weight is {we}")
        if c.forces is None and wf * c.forces_weight * c.weight > 0 and c.n_atoms > 1:
            raise ValueError(
                f"{c.source}: configuration has no forces label but the forces weight is {wf}; "
                "set fit.forces_weight: 0 to fit energies only"
            )


def _ladder(x: int, minimum: int = 8) -> int:
    """Smallest 2^k or 3·2^(k-1) ≥ x (and ≥ minimum): few distinct static sizes."""
    v = minimum
    while v < x:
        v = v * 3 // 2 if (v & (v - 1)) == 0 else v * 4 // 3
    return v


def _design_batches(graphs, batch_size: int, atom_budget: int):
    """Group graphs of similar size (sorted by atom count) into padded batches with a bounded atom count.

    Yields (padded batch, graph indices, max atoms per graph), with padded shapes on a small ladder of
    sizes, so that jit compiles a handful of times.
    """
    from jace.data.graph import Bucket, batch_graphs, pad_graph

    sizes = np.array([int(g.n_node[0]) for g in graphs])
    order = np.argsort(sizes, kind="stable")
    group: list[int] = []
    groups = []
    for k in order:
        if group and (len(group) >= batch_size or sizes[group + [k]].sum() > atom_budget):
            groups.append(group)
            group = []
        group.append(int(k))
    groups.append(group)
    for grp in groups:
        n_node = int(sizes[grp].sum())
        n_edge = sum(int(graphs[k].n_edge[0]) for k in grp)
        bucket = Bucket(_ladder(n_node + 1), _ladder(max(n_edge, 1)), _ladder(len(grp) + 1, 2))
        yield pad_graph(batch_graphs([graphs[k] for k in grp]), bucket), np.asarray(grp), _ladder(int(sizes[grp].max()), 4)


def design_rows(
    spec: LinearACESpec,
    configs: Sequence[Configuration],
    batch_size: int = 32,
    atom_budget: int = 384,
    edge_chunk: int = 1024,
):
    """Unweighted design-matrix rows, one configuration at a time (in size-sorted order).

    Yields (k, x_energy [n_feat], x_forces [n_atoms · 3, n_feat], x_virial [6, n_feat] or None) for
    configuration ``configs[k]``, with n_feat = n_species · n_basis; predictions are x @ c with c the
    flattened [n_species, n_basis] coefficients (energies relative to E0; virial components xx, xy,
    xz, yy, yz, zz in eV). Peak memory grows with ``edge_chunk`` (edges whose basis derivatives are
    evaluated at once, each [3, n_basis] plus the product basis's intermediates) more than with
    ``batch_size`` or ``atom_budget``: lower it for bases of tens of thousands of functions.
    """
    species = SpeciesMap.from_symbols(spec.elements)
    graphs = graphs_from_configurations(configs, spec.cutoff, species)
    iu = np.triu_indices(3)
    for batch, idx, _ in _design_batches(graphs, batch_size, atom_budget):
        ex, fx, vx = jax.device_get(batch_design_edges(spec, batch, edge_chunk=int(edge_chunk)))
        start = 0
        for slot, k in enumerate(idx):
            c = configs[k]
            x_v = vx[slot][iu[0], iu[1]] if c.volume > 1e-8 else None
            yield int(k), ex[slot], fx[start : start + c.n_atoms].reshape(c.n_atoms * 3, -1), x_v
            start += c.n_atoms


def row_kinds(config: Configuration) -> list[str]:
    """Kinds of the rows ``weighted_rows`` makes for ``config``, in its order: "e" (energy), "f" (forces,
    3 per atom) and "v" (virials, 6; only for a cell with volume, where ``design_rows`` gives x_virial)."""
    kinds = ["e"] if config.energy is not None else []
    kinds += ["f"] * (3 * config.n_atoms) if config.forces is not None else []
    kinds += ["v"] * 6 if config.stress is not None and config.volume > 1e-8 else []
    return kinds


def count_rows(config: Configuration) -> int:
    """Number of least-squares rows ``weighted_rows`` makes for ``config`` (energy, 3 per atom, 6 virials)."""
    return len(row_kinds(config))


def weighted_rows(fit: FitSpec, config: Configuration, e0_total: float, x_e, x_f, x_v):
    """Apply FitSpec weights (see its docstring) to one configuration's rows. Returns (X, y)."""
    we, wf, ws = fit.weights_for(config.config_type)
    sqrt_n = np.sqrt(config.n_atoms)
    rows, rhs = [], []
    if config.energy is not None:
        w = we * config.energy_weight * config.weight / sqrt_n
        rows.append(w * x_e[None])
        rhs.append(np.array([w * (config.energy - e0_total)]))
    if config.forces is not None:
        w = wf * config.forces_weight * config.weight
        rows.append(w * x_f)
        rhs.append(w * config.forces.reshape(-1))
    if config.stress is not None and x_v is not None:
        w = ws * config.stress_weight * config.weight / sqrt_n
        rows.append(w * x_v)
        rhs.append(w * config.virial[np.triu_indices(3)])
    if not rows:
        return np.zeros((0, x_e.shape[-1])), np.zeros(0)
    return np.vstack(rows), np.concatenate(rhs)


def assemble_linear_system(
    spec: LinearACESpec,
    fit: FitSpec,
    train: Sequence[Configuration],
    e0: np.ndarray,
    batch_size: int | None = None,
    atom_budget: int = 384,
    solver: str = "qr",
    edge_chunk: int = 1024,
) -> tuple[IncrementalQR | DualRidge, dict]:
    """Stream the weighted design matrix of ``train`` into a solver (energies relative to E0).

    solver: "qr" (``IncrementalQR``, memory O(n_features²)) or "dual" (``DualRidge``, memory
    O(n_rows²) plus the rows on disk: for bases with more features than rows).
    Returns (solver, info) with info: n_basis, n_features, n_rows, row_kinds ([n_rows] "e", "f" or "v",
    in the solver's row order; with ``DualRidge.solve(row_scale=...)`` they re-weight an observable
    after assembly), assembly_time_s.
    """
    species = SpeciesMap.from_symbols(spec.elements)
    n_b = product_basis_for(spec).n_functions()
    n_feat = len(species) * n_b
    if solver == "qr":
        solver = IncrementalQR(n_feat)
    elif solver == "dual":
        solver = DualRidge(n_feat, sum(count_rows(c) for c in train))
    else:
        raise ValueError(f"solver must be 'qr' or 'dual', got {solver!r}")
    t0 = time.perf_counter()
    kinds: list[str] = []
    for k, x_e, x_f, x_v in design_rows(spec, train, batch_size or max(1, int(fit.chunk_size)), atom_budget, edge_chunk):
        c = train[k]
        e0_total = float(np.asarray(e0)[species.indices(c.numbers, c.source)].sum())
        x, y = weighted_rows(fit, c, e0_total, x_e, x_f, x_v)
        solver.add(x, y)
        kinds += row_kinds(c)
        if len(kinds) != solver.n_rows:  # one rule for row counts, kinds and the rows themselves
            raise RuntimeError(f"{c.source}: row_kinds gives {len(kinds)} rows, weighted_rows {solver.n_rows}")
    info = {
        "n_basis": int(n_b),
        "n_features": int(n_feat),
        "n_rows": int(solver.n_rows),
        "row_kinds": np.asarray(kinds),
        "assembly_time_s": time.perf_counter() - t0,
    }
    return solver, info


def fit_linear_ace(
    spec: LinearACESpec,
    fit: FitSpec,
    train: Sequence[Configuration],
    isolated: Sequence[Configuration] = (),
    batch_size: int | None = None,
):
    """Fit a linear ACE model.

    Args:
      spec: the model; fit: weights, prior and E0 choice.
      train: labelled configurations (energy required; forces and stress used when present).
      isolated: isolated-atom configurations, used for E0 when ``fit.e0 == "isolated"``.
    Returns:
      (model, info) where info has n_basis, n_features, n_rows, solver, fit_time_s, assembly_time_s,
      solve_time_s, e0.
    """
    from jace.data.e0 import resolve_e0

    if not train:
        raise ValueError("no training configurations")
    species = SpeciesMap.from_symbols(spec.elements)
    _check_labels(train, fit)
    t0 = time.perf_counter()
    e0 = np.asarray(resolve_e0(fit.e0, species, list(train), list(isolated)), dtype=np.float64)
    basis = product_basis_for(spec)
    kind = fit.solver
    if kind == "auto":
        more_features = len(species) * basis.n_functions() > sum(count_rows(c) for c in train)
        kind = "dual" if more_features and fit.lam > 0 else "qr"
    solver, info = assemble_linear_system(spec, fit, train, e0, batch_size, solver=kind)
    info.pop("row_kinds")  # per-row detail for re-weighting; not part of the fit's summary (metadata is JSON)
    ts = time.perf_counter()
    gamma = np.tile(smoothness_prior(basis, spec, fit), len(species))
    try:
        coef = solver.solve(fit.lam, gamma)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"fit.lam = {fit.lam:g} is below the round-off floor of the dual (kernel) solver for this data: "
            "raise fit.lam or set fit.solver: qr"
        ) from None
    finally:
        if kind == "dual":
            solver.close()
    info.update(
        solver=kind,
        n_train=len(train),
        solve_time_s=time.perf_counter() - ts,
        fit_time_s=time.perf_counter() - t0,
        e0={s: float(v) for s, v in zip(species.symbols, e0)},
    )
    model = LinearACEModel(spec, e0, coef.reshape(len(species), -1), metadata={"fit": info})
    return model, info


def evaluate(model, configs: Sequence[Configuration], batch_size: int = 16):
    """Predict energies (eV), forces ([n, 3] eV/Å) and stresses ([3, 3] eV/Å³, None without a cell) per config.

    Batches are padded to a geometric ladder of shapes (``_ladder``) shared by every call, so
    evaluating several datasets with one model reuses the compiled functions.
    """
    from jace.data.graph import Bucket, batch_graphs, pad_graph

    graphs = graphs_from_configurations(configs, model.cutoff, model.species)
    energies, forces, stresses = [None] * len(configs), [None] * len(configs), [None] * len(configs)
    for s0 in range(0, len(graphs), batch_size):
        idx = list(range(s0, min(s0 + batch_size, len(graphs))))
        n_node = sum(configs[k].n_atoms for k in idx)
        n_edge = sum(int(graphs[k].n_edge[0]) for k in idx)
        bucket = Bucket(_ladder(n_node + 1), _ladder(max(n_edge, 1)), batch_size + 1)
        out = jax.device_get(model.predict_graph(pad_graph(batch_graphs([graphs[k] for k in idx]), bucket)))
        start = 0
        for slot, k in enumerate(idx):
            n = configs[k].n_atoms
            energies[k] = float(out.energy[slot])
            forces[k] = np.asarray(out.forces[start : start + n], dtype=np.float64)
            stresses[k] = np.asarray(out.stress[slot], dtype=np.float64) if configs[k].volume > 1e-8 else None
            start += n
    return energies, forces, stresses
