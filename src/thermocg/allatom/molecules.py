"""Molecule definitions for all-atom reference data: built-in force fields and a YAML format.

A :class:`Molecule` is one molecule type with its force field: sites (name, type, mass, charge,
Lennard-Jones sigma/epsilon, a reference position), bonds, rigid constraints, angles, torsions, the
Lennard-Jones mixing rule, 1-4 scaling and the cutoff the force field prescribes. Everything is in
thermocg's internal units (A, kcal/mol, amu, e, degrees); :mod:`thermocg.allatom.runner` converts to
OpenMM's nm and kJ/mol at the edge.

Energy conventions (the same in YAML and in Python):

- bond      E = 1/2 k (r - r0)^2             k in kcal/mol/A^2 (note the 1/2: OPLS/AMBER tables list
                                             K in E = K (r - r0)^2, so k = 2 K)
- angle     E = 1/2 k (theta - theta0)^2     k in kcal/mol/rad^2 (same remark, k = 2 K)
- torsion   E = k (1 + cos(n phi - phi0))    k in kcal/mol, one term per periodicity n; an OPLS Fourier
                                             term V_n / 2 [1 +- cos(n phi)] is k = V_n / 2 with phi0 = 0
                                             (odd n) or 180 deg (even n)
- LJ        E = 4 eps [(sigma/r)^12 - (sigma/r)^6]; mixing ``lorentz-berthelot`` (sigma arithmetic,
            eps geometric) or ``geometric`` (both geometric, as OPLS prescribes)
- Coulomb between all pairs of different molecules, and within a molecule between sites more than
  three bonds apart; sites 1-2 and 1-3 apart (via bonds or constraints) are excluded, 1-4 pairs are
  scaled by ``scale14_lj`` / ``scale14_coulomb``.

The YAML format (see :func:`molecule_from_dict` for every key)::

    name: my_methanol
    source: "Chen, Potoff & Siepmann, J. Phys. Chem. B 105, 3093 (2001)"
    mixing: lorentz-berthelot          # or geometric
    cutoff_A: 14.0
    dispersion_correction: true        # analytic long-range LJ tail correction
    density_guess_g_cm3: 0.79          # initial box density for NPT state points
    sites:
      - {name: CH3, type: CH3, mass_amu: 15.035, charge_e: 0.265, sigma_A: 3.75, epsilon_K: 98.0,
         position_A: [0.0, 0.0, 0.0]}
      ...                              # epsilon_kcal_mol instead of epsilon_K (eps/k_B) also works
    constraints: [{atoms: [CH3, O], length_A: 1.43}]
    bonds: [{atoms: [O, H], length_A: 0.945, k_kcal_mol_A2: 1106.0}]
    angles: [{atoms: [CH3, O, H], theta0_deg: 108.5, k_kcal_mol_rad2: 110.1}]
    torsions: [{atoms: [H1, C, O, HO], periodicity: 3, phase_deg: 0.0, k_kcal_mol: 0.225}]

Atoms in ``atoms`` lists are site names (unique within the molecule) or 0-based indices.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from thermocg import units


class MoleculeError(ValueError):
    """A molecule definition that is unknown, incomplete or inconsistent; the message names its source."""


@dataclass(frozen=True)
class Site:
    """One interaction site (atom or united atom)."""

    name: str
    type: str
    mass_amu: float
    charge_e: float
    sigma_A: float
    epsilon_kcal_mol: float
    position_A: tuple[float, float, float]


@dataclass(frozen=True)
class Bond:
    atoms: tuple[int, int]
    length_A: float
    k_kcal_mol_A2: float


@dataclass(frozen=True)
class Constraint:
    atoms: tuple[int, int]
    length_A: float


@dataclass(frozen=True)
class Angle:
    atoms: tuple[int, int, int]
    theta0_deg: float
    k_kcal_mol_rad2: float


@dataclass(frozen=True)
class Torsion:
    atoms: tuple[int, int, int, int]
    periodicity: int
    phase_deg: float
    k_kcal_mol: float


@dataclass(frozen=True)
class Molecule:
    """A molecule type and its force field, in internal units (see the module docstring)."""

    name: str
    sites: tuple[Site, ...]
    bonds: tuple[Bond, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    angles: tuple[Angle, ...] = ()
    torsions: tuple[Torsion, ...] = ()
    mixing: str = "lorentz-berthelot"
    scale14_lj: float = 0.5
    scale14_coulomb: float = 0.5
    cutoff_A: float = 10.0
    dispersion_correction: bool = True
    density_guess_g_cm3: float = 0.8
    source: str = ""
    #: where the definition came from ("builtin" or the YAML path)
    origin: str = "builtin"

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    @property
    def masses_amu(self) -> np.ndarray:
        return np.array([s.mass_amu for s in self.sites])

    @property
    def mass_amu(self) -> float:
        return float(sum(s.mass_amu for s in self.sites))

    @property
    def charges_e(self) -> np.ndarray:
        return np.array([s.charge_e for s in self.sites])

    @property
    def type_names(self) -> tuple[str, ...]:
        """Distinct site types in order of first appearance."""
        return tuple(dict.fromkeys(s.type for s in self.sites))

    @property
    def positions_A(self) -> np.ndarray:
        """Reference geometry, (n_sites, 3) A."""
        return np.array([s.position_A for s in self.sites], dtype=np.float64)

    def topology_pairs(self) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
        """(excluded, pairs14): site pairs 1-2/1-3 apart and 1-4 apart over bonds and constraints."""
        n = self.n_sites
        adjacency: list[set[int]] = [set() for _ in range(n)]
        for i, j in [b.atoms for b in self.bonds] + [c.atoms for c in self.constraints]:
            adjacency[i].add(j)
            adjacency[j].add(i)
        # breadth-first graph distance from each site, up to 3 bonds
        excluded, pairs14 = set(), set()
        for start in range(n):
            distance = {start: 0}
            frontier = [start]
            for depth in (1, 2, 3):
                frontier = [k for i in frontier for k in adjacency[i] if k not in distance]
                for k in frontier:
                    distance.setdefault(k, depth)
            for k, d in distance.items():
                if k <= start:
                    continue
                if d <= 2:
                    excluded.add((start, k))
                elif d == 3:
                    pairs14.add((start, k))
        return excluded, pairs14

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary for metadata."""
        return {
            "name": self.name, "source": self.source, "origin": self.origin, "mixing": self.mixing,
            "cutoff_A": self.cutoff_A, "dispersion_correction": self.dispersion_correction,
            "scale14_lj": self.scale14_lj, "scale14_coulomb": self.scale14_coulomb,
            "sites": [s.name for s in self.sites], "types": [s.type for s in self.sites],
            "n_constraints": len(self.constraints), "n_bonds": len(self.bonds),
            "n_angles": len(self.angles), "n_torsions": len(self.torsions),
        }


def mixed_lj(mixing: str, a: Any, b: Any) -> tuple[float, float]:
    """(sigma_A, epsilon_kcal_mol) of the LJ pair of ``a`` and ``b`` (anything with ``sigma_A`` and
    ``epsilon_kcal_mol``: sites, LJ classes) under a mixing rule: ``geometric`` gives
    sigma = sqrt(sigma_a sigma_b), anything else Lorentz-Berthelot's sigma = (sigma_a + sigma_b) / 2;
    epsilon = sqrt(eps_a eps_b) under both."""
    eps = math.sqrt(a.epsilon_kcal_mol * b.epsilon_kcal_mol)
    if mixing == "geometric":
        return math.sqrt(a.sigma_A * b.sigma_A), eps
    return 0.5 * (a.sigma_A + b.sigma_A), eps


# --------------------------------------------------------------------------------------------------
# parsing (YAML and built-ins share one schema)
# --------------------------------------------------------------------------------------------------

_TOP_KEYS = {
    "name", "source", "sites", "bonds", "constraints", "angles", "torsions", "mixing", "scale14_lj",
    "scale14_coulomb", "cutoff_A", "dispersion_correction", "density_guess_g_cm3",
}
_SITE_KEYS = {"name", "type", "mass_amu", "charge_e", "sigma_A", "epsilon_kcal_mol", "epsilon_K", "position_A"}
_TERM_KEYS = {
    "bonds": ({"atoms", "length_A", "k_kcal_mol_A2"}, 2),
    "constraints": ({"atoms", "length_A"}, 2),
    "angles": ({"atoms", "theta0_deg", "k_kcal_mol_rad2"}, 3),
    "torsions": ({"atoms", "periodicity", "phase_deg", "k_kcal_mol"}, 4),
}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MoleculeError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _check_keys(data: Any, required: set[str], allowed: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise MoleculeError(f"{where}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MoleculeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise MoleculeError(f"{where}: missing required key(s) {missing}")


def _parse_site(s: Any, here: str) -> Site:
    """One ``sites`` entry (``here`` names it in errors): epsilon from ``epsilon_kcal_mol`` or
    ``epsilon_K`` (eps/k_B, times k_B in kcal/mol/K), a positive mass, non-negative sigma and epsilon."""
    _check_keys(s, {"name", "mass_amu", "charge_e", "sigma_A", "position_A"}, _SITE_KEYS, here)
    if ("epsilon_kcal_mol" in s) == ("epsilon_K" in s):
        raise MoleculeError(f"{here}: give exactly one of epsilon_kcal_mol or epsilon_K")
    eps = (_number(s["epsilon_kcal_mol"], f"{here}.epsilon_kcal_mol") if "epsilon_kcal_mol" in s
           else _number(s["epsilon_K"], f"{here}.epsilon_K") * units.KB_KCAL_MOL_K)
    pos = s["position_A"]
    if not isinstance(pos, (list, tuple)) or len(pos) != 3:
        raise MoleculeError(f"{here}.position_A: expected three numbers, got {pos!r}")
    site = Site(
        name=str(s["name"]), type=str(s.get("type", s["name"])),
        mass_amu=_number(s["mass_amu"], f"{here}.mass_amu"),
        charge_e=_number(s["charge_e"], f"{here}.charge_e"),
        sigma_A=_number(s["sigma_A"], f"{here}.sigma_A"), epsilon_kcal_mol=eps,
        position_A=tuple(_number(x, f"{here}.position_A") for x in pos),
    )
    if site.mass_amu <= 0:
        raise MoleculeError(f"{here}.mass_amu: must be positive, got {site.mass_amu}")
    if site.sigma_A < 0 or site.epsilon_kcal_mol < 0:
        raise MoleculeError(f"{here}: sigma_A and epsilon must be non-negative")
    return site


def _parse_sites(raw_sites: Any, where: str) -> list[Site]:
    """The ``sites`` list: a non-empty list of sites with unique names."""
    if not isinstance(raw_sites, list) or not raw_sites:
        raise MoleculeError(f"{where}: 'sites' must be a non-empty list")
    sites = [_parse_site(s, f"{where}: sites[{k}]") for k, s in enumerate(raw_sites)]
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise MoleculeError(f"{where}: site names must be unique, got {names}")
    return sites


def _site_index(ref: Any, names: list[str], here: str) -> int:
    """The index of a site referred to by name or by 0-based index (``names``: the sites' names)."""
    if isinstance(ref, bool):
        raise MoleculeError(f"{here}: {ref!r} is not a site name or index")
    if isinstance(ref, int):
        if not 0 <= ref < len(names):
            raise MoleculeError(f"{here}: site index {ref} outside 0..{len(names) - 1}")
        return ref
    if str(ref) not in names:
        raise MoleculeError(f"{here}: unknown site {ref!r}; sites are {names}")
    return names.index(str(ref))


def _parse_term(section: str, e: Any, names: list[str], here: str) -> Bond | Constraint | Angle | Torsion:
    """One entry of ``bonds``, ``constraints``, ``angles`` or ``torsions``: its keys, its distinct
    sites (as many as the term has), its parameters (a torsion's periodicity a positive integer)."""
    keys, n_atoms = _TERM_KEYS[section]
    _check_keys(e, keys, keys, here)
    refs = e["atoms"]
    if not isinstance(refs, (list, tuple)) or len(refs) != n_atoms:
        raise MoleculeError(f"{here}.atoms: expected {n_atoms} sites, got {refs!r}")
    idx = tuple(_site_index(r, names, f"{here}.atoms") for r in refs)
    if len(set(idx)) != n_atoms:
        raise MoleculeError(f"{here}.atoms: a site appears twice in {refs!r}")
    if section == "bonds":
        return Bond(idx, _number(e["length_A"], f"{here}.length_A"),
                    _number(e["k_kcal_mol_A2"], f"{here}.k_kcal_mol_A2"))
    if section == "constraints":
        return Constraint(idx, _number(e["length_A"], f"{here}.length_A"))
    if section == "angles":
        return Angle(idx, _number(e["theta0_deg"], f"{here}.theta0_deg"),
                     _number(e["k_kcal_mol_rad2"], f"{here}.k_kcal_mol_rad2"))
    n = e["periodicity"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MoleculeError(f"{here}.periodicity: expected a positive integer, got {n!r}")
    return Torsion(idx, n, _number(e["phase_deg"], f"{here}.phase_deg"), _number(e["k_kcal_mol"], f"{here}.k_kcal_mol"))


def _parse_terms(data: dict[str, Any], names: list[str], where: str) -> dict[str, list[Any]]:
    """Every bonded term and constraint, per section (each an optional list); constraint lengths positive."""
    terms: dict[str, list[Any]] = {}
    for section in _TERM_KEYS:
        entries = data.get(section) or []
        if not isinstance(entries, list):
            raise MoleculeError(f"{where}: '{section}' must be a list")
        terms[section] = [_parse_term(section, e, names, f"{where}: {section}[{k}]") for k, e in enumerate(entries)]
    for c in terms["constraints"]:
        if c.length_A <= 0:
            raise MoleculeError(f"{where}: constraint {c.atoms} has non-positive length {c.length_A}")
    return terms


def molecule_from_dict(data: dict[str, Any], *, origin: str = "builtin") -> Molecule:
    """Build a :class:`Molecule` from the YAML schema (module docstring); errors name ``origin``.

    Required: ``name``, ``sites`` (each with ``name``, ``mass_amu``, ``charge_e``, ``sigma_A``, one of
    ``epsilon_kcal_mol`` / ``epsilon_K``, ``position_A``; ``type`` defaults to the site name).
    Optional: ``bonds``, ``constraints``, ``angles``, ``torsions``, ``mixing`` (lorentz-berthelot),
    ``scale14_lj`` / ``scale14_coulomb`` (0.5), ``cutoff_A`` (10), ``dispersion_correction`` (true),
    ``density_guess_g_cm3`` (0.8), ``source``.
    """
    where = f"molecule {origin}"
    _check_keys(data, {"name", "sites"}, _TOP_KEYS, where)
    name = str(data["name"])
    sites = _parse_sites(data["sites"], where)
    terms = _parse_terms(data, [s.name for s in sites], where)
    mixing = str(data.get("mixing", "lorentz-berthelot"))
    if mixing not in ("lorentz-berthelot", "geometric"):
        raise MoleculeError(f"{where}: mixing must be 'lorentz-berthelot' or 'geometric', got {mixing!r}")
    molecule = Molecule(
        name=name, sites=tuple(sites), bonds=tuple(terms["bonds"]),
        constraints=tuple(terms["constraints"]), angles=tuple(terms["angles"]),
        torsions=tuple(terms["torsions"]), mixing=mixing,
        scale14_lj=_number(data.get("scale14_lj", 0.5), f"{where}: scale14_lj"),
        scale14_coulomb=_number(data.get("scale14_coulomb", 0.5), f"{where}: scale14_coulomb"),
        cutoff_A=_number(data.get("cutoff_A", 10.0), f"{where}: cutoff_A"),
        dispersion_correction=bool(data.get("dispersion_correction", True)),
        density_guess_g_cm3=_number(data.get("density_guess_g_cm3", 0.8), f"{where}: density_guess_g_cm3"),
        source=str(data.get("source", "")), origin=origin,
    )
    if molecule.cutoff_A <= 0 or molecule.density_guess_g_cm3 <= 0:
        raise MoleculeError(f"{where}: cutoff_A and density_guess_g_cm3 must be positive")
    net = float(molecule.charges_e.sum())
    if abs(net) > 1e-6:
        raise MoleculeError(f"{where}: net charge {net:+.6f} e; molecules must be neutral (PME)")
    return molecule


def load_molecule_yaml(path: str | os.PathLike) -> Molecule:
    """Read a molecule from a YAML file; errors name the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MoleculeError(f"{path}: cannot read molecule file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MoleculeError(f"{path}: not valid YAML ({exc})") from None
    return molecule_from_dict(data, origin=str(path))


# --------------------------------------------------------------------------------------------------
# built-in molecules
# --------------------------------------------------------------------------------------------------

def _place(bond_A: float, angle_deg: float, dihedral_deg: float, a: np.ndarray, b: np.ndarray,
           c: np.ndarray) -> list[float]:
    """Position of d bonded to c with |cd| = bond, angle bcd and dihedral abcd (internal coordinates)."""
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    theta, phi = math.radians(angle_deg), math.radians(dihedral_deg)
    d = np.array([-bond_A * math.cos(theta), bond_A * math.sin(theta) * math.cos(phi),
                  bond_A * math.sin(theta) * math.sin(phi)])
    return (c + d[0] * bc + d[1] * m + d[2] * n).tolist()


def _methanol_trappe() -> dict[str, Any]:
    """Methanol, TraPPE-UA: Chen, Potoff & Siepmann, J. Phys. Chem. B 105, 3093 (2001).

    Three sites: CH3 (sigma 3.75 A, eps/k_B 98 K, q +0.265 e), O (3.02 A, 93 K, -0.700 e), H (no LJ,
    +0.435 e). Fixed CH3-O 1.43 A and O-H 0.945 A; harmonic CH3-O-H bend, theta0 108.50 deg,
    k_theta/k_B = 55,400 K/rad^2 with U = k_theta/2 (theta - theta0)^2. Lorentz-Berthelot mixing;
    TraPPE uses a 14 A LJ cutoff with analytic tail corrections and Ewald sums for the charges.
    The TraPPE liquid density at 298 K, 1 atm is about 0.78-0.79 g/cm^3 (experiment 0.787).
    """
    ch3, o = np.array([0.0, 0.0, 0.0]), np.array([1.43, 0.0, 0.0])
    h = o + 0.945 * np.array([-math.cos(math.radians(108.5)), math.sin(math.radians(108.5)), 0.0])
    return {
        "name": "methanol_trappe",
        "source": "TraPPE-UA: Chen, Potoff & Siepmann, J. Phys. Chem. B 105, 3093 (2001)",
        "mixing": "lorentz-berthelot", "cutoff_A": 14.0, "dispersion_correction": True,
        "scale14_lj": 0.0, "scale14_coulomb": 0.0, "density_guess_g_cm3": 0.78,
        "sites": [
            {"name": "CH3", "type": "CH3", "mass_amu": 15.035, "charge_e": 0.265, "sigma_A": 3.75,
             "epsilon_K": 98.0, "position_A": ch3.tolist()},
            {"name": "O", "type": "O", "mass_amu": 15.999, "charge_e": -0.700, "sigma_A": 3.02,
             "epsilon_K": 93.0, "position_A": o.tolist()},
            {"name": "H", "type": "H", "mass_amu": 1.008, "charge_e": 0.435, "sigma_A": 0.0,
             "epsilon_K": 0.0, "position_A": h.tolist()},
        ],
        "constraints": [{"atoms": ["CH3", "O"], "length_A": 1.43}, {"atoms": ["O", "H"], "length_A": 0.945}],
        "angles": [{"atoms": ["CH3", "O", "H"], "theta0_deg": 108.5,
                    "k_kcal_mol_rad2": 55400.0 * units.KB_KCAL_MOL_K}],
    }


def _methanol_opls() -> dict[str, Any]:
    """Methanol, OPLS-AA: Jorgensen, Maxwell & Tirado-Rives, J. Am. Chem. Soc. 118, 11225 (1996).

    Six atoms, types opls_157 (C: sigma 3.50 A, eps 0.066 kcal/mol, q +0.145), opls_156 (HC: 2.50 A,
    0.030, +0.040), opls_154 (OH: 3.12 A, 0.170, -0.683), opls_155 (HO: no LJ, +0.418). Bonded terms
    from the OPLS-AA tables (AMBER-style E = K x^2; here k = 2 K): CT-HC 1.090 A K 340, CT-OH 1.410 A
    K 320, OH-HO 0.945 A K 553 kcal/mol/A^2; HC-CT-HC 107.8 deg K 33.0, HC-CT-OH 109.5 deg K 35.0,
    CT-OH-HO 108.5 deg K 55.0 kcal/mol/rad^2; HC-CT-OH-HO torsion V3 = 0.450 kcal/mol. Geometric
    mixing of sigma and epsilon, 1-4 interactions scaled by 0.5, 12 A cutoff with tail correction.
    """
    c, o = np.array([0.0, 0.0, 0.0]), np.array([1.41, 0.0, 0.0])
    ho = _place(0.945, 108.5, 180.0, np.array([0.0, 1.0, 0.0]), c, o)
    hcs = [_place(1.090, 109.5, phi, np.array(ho), o, c) for phi in (60.0, 180.0, 300.0)]
    hc = {"mass_amu": 1.008, "charge_e": 0.040, "sigma_A": 2.50, "epsilon_kcal_mol": 0.030, "type": "HC"}
    sites = [
        {"name": "C", "type": "CT", "mass_amu": 12.011, "charge_e": 0.145, "sigma_A": 3.50,
         "epsilon_kcal_mol": 0.066, "position_A": c.tolist()},
        {"name": "H1", "position_A": hcs[0], **hc},
        {"name": "H2", "position_A": hcs[1], **hc},
        {"name": "H3", "position_A": hcs[2], **hc},
        {"name": "O", "type": "OH", "mass_amu": 15.999, "charge_e": -0.683, "sigma_A": 3.12,
         "epsilon_kcal_mol": 0.170, "position_A": o.tolist()},
        {"name": "HO", "type": "HO", "mass_amu": 1.008, "charge_e": 0.418, "sigma_A": 0.0,
         "epsilon_kcal_mol": 0.0, "position_A": ho},
    ]
    hs = ["H1", "H2", "H3"]
    return {
        "name": "methanol_opls",
        "source": "OPLS-AA: Jorgensen, Maxwell & Tirado-Rives, J. Am. Chem. Soc. 118, 11225 (1996)",
        "mixing": "geometric", "cutoff_A": 12.0, "dispersion_correction": True,
        "scale14_lj": 0.5, "scale14_coulomb": 0.5, "density_guess_g_cm3": 0.78,
        "sites": sites,
        "bonds": [{"atoms": ["C", h], "length_A": 1.090, "k_kcal_mol_A2": 2 * 340.0} for h in hs]
        + [{"atoms": ["C", "O"], "length_A": 1.410, "k_kcal_mol_A2": 2 * 320.0},
           {"atoms": ["O", "HO"], "length_A": 0.945, "k_kcal_mol_A2": 2 * 553.0}],
        "angles": [{"atoms": [a, "C", b], "theta0_deg": 107.8, "k_kcal_mol_rad2": 2 * 33.0}
                   for a, b in (("H1", "H2"), ("H1", "H3"), ("H2", "H3"))]
        + [{"atoms": [h, "C", "O"], "theta0_deg": 109.5, "k_kcal_mol_rad2": 2 * 35.0} for h in hs]
        + [{"atoms": ["C", "O", "HO"], "theta0_deg": 108.5, "k_kcal_mol_rad2": 2 * 55.0}],
        "torsions": [{"atoms": [h, "C", "O", "HO"], "periodicity": 3, "phase_deg": 0.0,
                      "k_kcal_mol": 0.450 / 2} for h in hs],
    }


def _water_spce() -> dict[str, Any]:
    """Water, SPC/E: Berendsen, Grigera & Straatsma, J. Phys. Chem. 91, 6269 (1987).

    Rigid: O-H 1.000 A, H-O-H 109.47 deg (H-H 1.63299 A), all three distances constrained (OpenMM
    solves a rigid three-site water with SETTLE). O: sigma 3.166 A, eps 0.650 kJ/mol = 0.15535
    kcal/mol, q -0.8476 e; H: q +0.4238 e, no LJ. The SPC/E density at 298 K, 1 bar is about
    0.998 g/cm^3 with PME and a long-range dispersion correction.
    """
    half = math.radians(109.47) / 2
    hh = 2.0 * math.sin(half)
    return {
        "name": "water_spce",
        "source": "SPC/E: Berendsen, Grigera & Straatsma, J. Phys. Chem. 91, 6269 (1987)",
        "mixing": "lorentz-berthelot", "cutoff_A": 10.0, "dispersion_correction": True,
        "scale14_lj": 0.0, "scale14_coulomb": 0.0, "density_guess_g_cm3": 1.0,
        "sites": [
            {"name": "OW", "type": "OW", "mass_amu": 15.9994, "charge_e": -0.8476, "sigma_A": 3.166,
             "epsilon_kcal_mol": 0.650 * units.KJ_TO_KCAL, "position_A": [0.0, 0.0, 0.0]},
            {"name": "HW1", "type": "HW", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
             "epsilon_kcal_mol": 0.0, "position_A": [math.sin(half), math.cos(half), 0.0]},
            {"name": "HW2", "type": "HW", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0,
             "epsilon_kcal_mol": 0.0, "position_A": [-math.sin(half), math.cos(half), 0.0]},
        ],
        "constraints": [{"atoms": ["OW", "HW1"], "length_A": 1.0}, {"atoms": ["OW", "HW2"], "length_A": 1.0},
                        {"atoms": ["HW1", "HW2"], "length_A": hh}],
    }


BUILTIN_MOLECULES: dict[str, Callable[[], dict[str, Any]]] = {
    "methanol_trappe": _methanol_trappe,
    "methanol_opls": _methanol_opls,
    "water_spce": _water_spce,
}


def get_molecule(name_or_path: str | os.PathLike) -> Molecule:
    """A built-in molecule by name (``methanol_trappe``, ``methanol_opls``, ``water_spce``) or a YAML file.

    Raises :class:`MoleculeError` naming the known molecules when the name is neither.
    """
    key = str(name_or_path)
    if key in BUILTIN_MOLECULES:
        return molecule_from_dict(BUILTIN_MOLECULES[key](), origin="builtin")
    if key.endswith((".yaml", ".yml")) or os.sep in key:
        if not Path(key).is_file():
            raise MoleculeError(f"{key}: molecule file not found")
        return load_molecule_yaml(key)
    raise MoleculeError(
        f"unknown molecule {key!r}; built-in molecules are {sorted(BUILTIN_MOLECULES)}, "
        "or give the path of a YAML molecule file"
    )
