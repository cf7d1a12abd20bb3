"""Tests of crystalface.defects: random vacancies and Gaussian displacements, reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from crystalface import displace, vacancies


@pytest.fixture
def supercell(prototypes) -> Atoms:
    atoms = prototypes["bct141"].repeat((4, 4, 4))  # 128 atoms
    atoms.info["note"] = "original"
    return atoms


def _rows(atoms: Atoms) -> set:
    return {(z, *np.round(p, 8)) for z, p in zip(atoms.numbers, atoms.positions)}


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.25, 0.5, 0.7, 0.9])
def test_vacancies_removes_round_fraction_times_n_atoms(supercell, fraction):
    out = vacancies(supercell, fraction=fraction, seed=0)
    assert len(out) == len(supercell) - round(fraction * len(supercell))
    assert _rows(out) <= _rows(supercell)  # the survivors are unmoved atoms of the input
    assert np.array_equal(out.cell[:], supercell.cell[:]) and out.pbc.all()
    idx = [np.flatnonzero(np.all(np.isclose(supercell.positions, p), axis=1))[0] for p in out.positions]
    assert idx == sorted(idx)  # the input order is kept


def test_vacancies_is_deterministic_for_a_seed_and_differs_across_seeds(supercell):
    a = vacancies(supercell, fraction=0.25, seed=7)
    b = vacancies(supercell, fraction=0.25, seed=7)
    c = vacancies(supercell, fraction=0.25, seed=8)
    assert np.array_equal(a.positions, b.positions)
    assert _rows(a) != _rows(c)
    generator = vacancies(supercell, fraction=0.25, seed=np.random.default_rng(7))
    assert np.array_equal(generator.positions, a.positions)


def test_vacancies_does_not_modify_its_input(supercell):
    before = supercell.copy()
    out = vacancies(supercell, fraction=0.5, seed=1)
    out.positions += 1.0
    out.info["note"] = "changed"
    assert len(supercell) == len(before)
    assert np.array_equal(supercell.positions, before.positions)
    assert supercell.info == before.info


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_vacancies_rejects_a_bad_fraction(supercell, fraction):
    with pytest.raises(ValueError, match="fraction"):
        vacancies(supercell, fraction=fraction)


def test_vacancies_rejects_leaving_fewer_than_two_atoms():
    with pytest.raises(ValueError, match="fewer than two"):
        vacancies(Atoms("Cu4", positions=np.eye(4, 3)), fraction=0.7)


def test_displace_has_the_requested_standard_deviation(prototypes):
    atoms = prototypes["sc"].repeat((22, 22, 22))  # 10 648 atoms, 31 944 displacements
    sigma = 0.05
    delta = displace(atoms, sigma=sigma, seed=0).positions - atoms.positions
    n = delta.size
    # the sample std of n normal draws has relative standard error 1 / sqrt(2 n) = 0.4 %; allow 3 %
    assert delta.std() == pytest.approx(sigma, rel=0.03)
    assert np.allclose(delta.std(axis=0), sigma, rtol=0.05)  # the same along every axis
    assert abs(delta.mean()) < 5 * sigma / np.sqrt(n)
    assert np.abs(np.corrcoef(delta.T) - np.eye(3)).max() < 0.05  # independent axes
    kurtosis = np.mean((delta / delta.std()) ** 4)
    assert kurtosis == pytest.approx(3.0, abs=0.15)  # Gaussian, not uniform (1.8)


def test_displace_is_deterministic_and_does_not_modify_its_input(supercell):
    before = supercell.positions.copy()
    a = displace(supercell, sigma=0.1, seed=4)
    b = displace(supercell, sigma=0.1, seed=4)
    c = displace(supercell, sigma=0.1, seed=5)
    assert np.array_equal(supercell.positions, before)
    assert np.array_equal(a.positions, b.positions) and not np.allclose(a.positions, c.positions)
    assert a.info == supercell.info and np.array_equal(a.cell[:], supercell.cell[:])


def test_zero_sigma_is_the_identity(supercell):
    out = displace(supercell, sigma=0.0, seed=0)
    assert out is not supercell
    assert np.array_equal(out.positions, supercell.positions)
    assert np.array_equal(out.numbers, supercell.numbers)


@pytest.mark.parametrize("sigma", [-0.01, float("nan")])
def test_displace_rejects_a_bad_sigma(supercell, sigma):
    with pytest.raises(ValueError, match="sigma"):
        displace(supercell, sigma=sigma)


def test_displace_rejects_infinite_sigma(supercell):
    with pytest.raises(ValueError, match="sigma"):
        displace(supercell, sigma=float("inf"))
