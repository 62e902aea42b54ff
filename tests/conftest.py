"""Shared test setup: float64 everywhere, and small datasets built once per session."""

import jax

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def emt_configs():
    """A small EMT Cu–Au dataset (20 bulk configurations + 2 isolated atoms), deterministic."""
    from jace.data.synthetic import make_emt_dataset

    return make_emt_dataset(n_configs=20, seed=0)


@pytest.fixture(scope="session")
def cuau_species():
    from jace.data.graph import SpeciesMap

    return SpeciesMap.from_symbols(["Cu", "Au"])
