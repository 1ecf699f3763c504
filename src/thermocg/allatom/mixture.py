"""Systems of one or more molecule types: counts, cross interactions, topology.

A :class:`Mixture` is what the all-atom stages build and simulate: a list of components (a
:class:`~thermocg.allatom.molecules.Molecule` and how many of it) and, optionally, Lennard-Jones
parameters for pairs of site types of two different molecule types. A one-component system is a
mixture of one component, so every stage has one code path. Atoms are ordered component by
component, molecule by molecule, each molecule in its definition's site order (the order GROMACS's
``[ molecules ]`` blocks need).

Lennard-Jones parameters of a site pair (i, j):

- same molecule type: that force field's mixing rule (``lorentz-berthelot``: sigma arithmetic, eps
  geometric; ``geometric``: both geometric);
- different molecule types: the explicit ``cross_interactions`` entry for their two site types when
  there is one; otherwise the mixing rule the two force fields share. When their rules differ (TraPPE
  or SPC/E's Lorentz-Berthelot against OPLS-AA's geometric) a pair of two sites that both carry LJ is
  ambiguous, and the mixture refuses to be built until every such pair has an entry; pairs where one
  site has no LJ (eps = 0) are zero under either rule.

Cross entries name site types (``Site.type``: ``CH3``, ``OW``), qualified by the molecule
(``water_spce:OW``) where a type name occurs in two molecule types.

The cutoff of a mixture is the largest of its force fields' cutoffs, and the long-range dispersion
correction is applied when any force field prescribes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from thermocg.allatom.molecules import Molecule, get_molecule, mixed_lj
from thermocg.frames import Topology

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.config import SystemConfig

__all__ = ["Component", "CrossInteraction", "Mixture", "MixtureError", "as_mixture", "estimated_box_length_A",
           "mixture_from_config"]


class MixtureError(ValueError):
    """A mixture that cannot be built: unknown or ambiguous site types, missing cross interactions."""


@dataclass(frozen=True)
class Component:
    """One molecule type of a mixture and its number of molecules (zero allowed: an absent type)."""

    molecule: Molecule
    n_molecules: int


@dataclass(frozen=True)
class CrossInteraction:
    """LJ parameters for site types ``type_a`` and ``type_b`` of two different molecule types."""

    type_a: str
    type_b: str
    sigma_A: float
    epsilon_kcal_mol: float


@dataclass(frozen=True)
class LJClass:
    """Sites of one component that share a type and LJ parameters."""

    component: int
    type: str
    sigma_A: float
    epsilon_kcal_mol: float


def site_type_names(molecules: Sequence[Molecule]) -> list[list[str]]:
    """Per molecule type, per site: the atom-type name in topologies: ``Site.type``, or
    ``molecule:type`` when another molecule type has a site type of the same name."""
    out = []
    for k, molecule in enumerate(molecules):
        others = {t for j, m in enumerate(molecules) if j != k for t in m.type_names}
        out.append([f"{molecule.name}:{s.type}" if s.type in others else s.type for s in molecule.sites])
    return out


@dataclass(frozen=True, eq=False)
class Mixture:
    """Molecule types with counts, and the cross-interaction overrides (module docstring)."""

    components: tuple[Component, ...]
    cross_interactions: tuple[CrossInteraction, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "cross_interactions", tuple(self.cross_interactions))
        if not self.components:
            raise MixtureError("a system needs at least one molecule type")
        names = [c.molecule.name for c in self.components]
        if len(set(names)) != len(names):
            raise MixtureError(f"molecule types listed twice: {names}")
        for c in self.components:
            if isinstance(c.n_molecules, bool) or not isinstance(c.n_molecules, (int, np.integer)) \
                    or c.n_molecules < 0:
                raise MixtureError(f"{c.molecule.name}: the number of molecules must be a non-negative "
                                   f"integer, got {c.n_molecules!r}")
        if self.n_molecules < 1:
            raise MixtureError(f"the system holds no molecules ({', '.join(names)} all zero)")
        if self.cross_interactions and len(self.components) < 2:
            raise MixtureError("cross_interactions: only for mixtures of two or more molecule types")
        object.__setattr__(self, "_classes", self._build_classes())
        object.__setattr__(self, "_overrides", self._resolve_overrides())
        ambiguous = self.ambiguous_pairs()
        if ambiguous:
            raise MixtureError(
                "system.cross_interactions: "
                + "; ".join(f"{a.name} mixes by {a.mixing} and {b.name} by {b.mixing}" for a, b in
                            dict.fromkeys((self.components[p[0].component].molecule,
                                           self.components[p[1].component].molecule) for p in ambiguous))
                + ", so their LJ cross terms are ambiguous: give sigma_A and epsilon_kcal_mol for the pair(s) "
                + ", ".join(f"[{self._qualified(p[0])}, {self._qualified(p[1])}]" for p in ambiguous)
            )

    # ------------------------------------------------------------------ counts and sizes
    @property
    def molecules(self) -> tuple[Molecule, ...]:
        return tuple(c.molecule for c in self.components)

    @property
    def is_mixture(self) -> bool:
        return len(self.components) > 1

    @property
    def name(self) -> str:
        """``methanol_trappe`` or ``methanol_trappe+water_spce``."""
        return "+".join(c.molecule.name for c in self.components)

    @property
    def n_molecules(self) -> int:
        return int(sum(c.n_molecules for c in self.components))

    @property
    def n_atoms(self) -> int:
        return int(sum(c.n_molecules * c.molecule.n_sites for c in self.components))

    @property
    def mass_amu(self) -> float:
        """Total mass of the system, amu."""
        return float(sum(c.n_molecules * c.molecule.mass_amu for c in self.components))

    @property
    def counts(self) -> dict[str, int]:
        return {c.molecule.name: int(c.n_molecules) for c in self.components}

    @property
    def counts_text(self) -> str:
        """The counts for people: ``8 methanol_trappe + 24 water_spce``."""
        return " + ".join(f"{n} {name}" for name, n in self.counts.items())

    @property
    def mole_fractions(self) -> dict[str, float]:
        total = self.n_molecules
        return {c.molecule.name: c.n_molecules / total for c in self.components}

    @property
    def cutoff_A(self) -> float:
        """The largest cutoff of the force fields present."""
        return max(c.molecule.cutoff_A for c in self.components)

    @property
    def dispersion_correction(self) -> bool:
        return any(c.molecule.dispersion_correction for c in self.components if c.n_molecules > 0)

    @property
    def density_guess_g_cm3(self) -> float:
        """Ideal mixing of the pure liquids' densities: total mass / sum of the components' volumes."""
        present = [c for c in self.components if c.n_molecules > 0]
        volume = sum(c.n_molecules * c.molecule.mass_amu / c.molecule.density_guess_g_cm3 for c in present)
        return self.mass_amu / volume

    @property
    def source(self) -> str:
        return "; ".join(c.molecule.source for c in self.components if c.molecule.source)

    @property
    def origins(self) -> list[str]:
        return [c.molecule.origin for c in self.components if c.molecule.origin != "builtin"]

    def molecule_blocks(self) -> Iterator[tuple[int, Molecule, int, int]]:
        """(component index, molecule, molecule index, first atom) of every molecule, in atom order."""
        atom = mol = 0
        for k, c in enumerate(self.components):
            for _ in range(c.n_molecules):
                yield k, c.molecule, mol, atom
                atom += c.molecule.n_sites
                mol += 1

    def atom_molecule_ids(self) -> np.ndarray:
        """(n_atoms,) the molecule index of every atom."""
        sizes = np.concatenate([np.full(c.n_molecules, c.molecule.n_sites) for c in self.components])
        return np.repeat(np.arange(self.n_molecules), sizes.astype(np.int64))

    def atom_masses_amu(self) -> np.ndarray:
        return np.concatenate([np.tile(c.molecule.masses_amu, c.n_molecules) for c in self.components])

    def with_counts(self, counts: Sequence[int] | dict[str, int]) -> "Mixture":
        """The same molecule types and cross interactions with other counts (system order or by name)."""
        if isinstance(counts, dict):
            unknown = set(counts) - {c.molecule.name for c in self.components}
            if unknown:
                raise MixtureError(f"unknown molecule type(s) {sorted(unknown)}; the system has {self.name}")
            counts = [counts.get(c.molecule.name, 0) for c in self.components]
        if len(counts) != len(self.components):
            raise MixtureError(f"{len(counts)} counts for {len(self.components)} molecule types")
        return Mixture(tuple(Component(c.molecule, int(n)) for c, n in zip(self.components, counts)),
                       self.cross_interactions)

    # ------------------------------------------------------------------ Lennard-Jones
    def _build_classes(self) -> tuple[list[LJClass], list[np.ndarray]]:
        classes: list[LJClass] = []
        site_class: list[np.ndarray] = []
        for k, c in enumerate(self.components):
            index = []
            for site in c.molecule.sites:
                cls = LJClass(k, site.type, site.sigma_A, site.epsilon_kcal_mol)
                if cls not in classes:
                    classes.append(cls)
                index.append(classes.index(cls))
            site_class.append(np.asarray(index, dtype=np.int64))
        return classes, site_class

    @property
    def lj_classes(self) -> list[LJClass]:
        """The distinct (component, site type, sigma, epsilon) of the system."""
        return self._classes[0]  # type: ignore[attr-defined]

    def site_classes(self, component: int) -> np.ndarray:
        """(n_sites,) the LJ class of every site of component ``component``."""
        return self._classes[1][component]  # type: ignore[attr-defined]

    def _qualified(self, cls: LJClass) -> str:
        shared = sum(cls.type in c.molecule.type_names for c in self.components) > 1
        return f"{self.components[cls.component].molecule.name}:{cls.type}" if shared else cls.type

    def _find_type(self, ref: str, where: str) -> list[int]:
        """Component indices whose molecule has site type ``ref`` (``type`` or ``molecule:type``)."""
        if ":" in ref:
            mol, typ = ref.split(":", 1)
            hits = [k for k, c in enumerate(self.components) if c.molecule.name == mol]
            if not hits:
                raise MixtureError(f"{where}: no molecule type {mol!r} in the system ({self.name})")
            if typ not in self.components[hits[0]].molecule.type_names:
                raise MixtureError(f"{where}: {mol} has no site type {typ!r}; its types are "
                                   f"{list(self.components[hits[0]].molecule.type_names)}")
            return hits
        hits = [k for k, c in enumerate(self.components) if ref in c.molecule.type_names]
        if not hits:
            known = {c.molecule.name: list(c.molecule.type_names) for c in self.components}
            raise MixtureError(f"{where}: unknown site type {ref!r}; the site types are {known}")
        if len(hits) > 1:
            raise MixtureError(f"{where}: site type {ref!r} occurs in "
                               f"{[self.components[k].molecule.name for k in hits]}; qualify it as "
                               f"molecule:type (e.g. {self.components[hits[0]].molecule.name}:{ref})")
        return hits

    def _resolve_overrides(self) -> dict[tuple[int, str, int, str], CrossInteraction]:
        out: dict[tuple[int, str, int, str], CrossInteraction] = {}
        for item in self.cross_interactions:
            where = f"system.cross_interactions [{item.type_a}, {item.type_b}]"
            if not (math.isfinite(item.sigma_A) and item.sigma_A > 0
                    and math.isfinite(item.epsilon_kcal_mol) and item.epsilon_kcal_mol >= 0):
                raise MixtureError(f"{where}: sigma_A must be positive and epsilon_kcal_mol non-negative")
            (ka,), (kb,) = self._find_type(item.type_a, where), self._find_type(item.type_b, where)
            ta, tb = item.type_a.split(":")[-1], item.type_b.split(":")[-1]
            if ka == kb:
                raise MixtureError(f"{where}: both site types belong to {self.components[ka].molecule.name}; "
                                   "cross interactions are between different molecule types")
            key = (ka, ta, kb, tb) if ka < kb else (kb, tb, ka, ta)
            if key in out:
                raise MixtureError(f"{where}: this pair is given twice")
            out[key] = item
        return out

    def _override(self, a: LJClass, b: LJClass) -> CrossInteraction | None:
        key = (a.component, a.type, b.component, b.type) if a.component < b.component else \
            (b.component, b.type, a.component, a.type)
        return self._overrides.get(key)  # type: ignore[attr-defined]

    def ambiguous_pairs(self) -> list[tuple[LJClass, LJClass]]:
        """Cross pairs of LJ sites whose force fields mix differently and that have no override."""
        out = []
        classes = self.lj_classes
        for i, a in enumerate(classes):
            for b in classes[i + 1:]:
                if a.component == b.component or a.epsilon_kcal_mol == 0 or b.epsilon_kcal_mol == 0:
                    continue
                rules = {self.components[a.component].molecule.mixing, self.components[b.component].molecule.mixing}
                if len(rules) > 1 and self._override(a, b) is None:
                    out.append((a, b))
        return out

    def pair_lj(self, a: LJClass, b: LJClass) -> tuple[float, float, str]:
        """(sigma_A, epsilon_kcal_mol, how) of LJ classes ``a`` and ``b``; ``how`` is ``override`` or
        the mixing rule used."""
        if a.component != b.component:
            item = self._override(a, b)
            if item is not None:
                return item.sigma_A, item.epsilon_kcal_mol, "override"
            rules = {self.components[a.component].molecule.mixing, self.components[b.component].molecule.mixing}
            if len(rules) > 1:
                # only pairs with a site without LJ get here (the rest are ambiguous, refused above)
                return 0.5 * (a.sigma_A + b.sigma_A), 0.0, "zero epsilon"
        mixing = self.components[a.component].molecule.mixing
        return (*mixed_lj(mixing, a, b), mixing)

    def lj_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(sigma_A, epsilon_kcal_mol) tables (n_classes, n_classes) over :attr:`lj_classes`."""
        n = len(self.lj_classes)
        sigma, eps = np.zeros((n, n)), np.zeros((n, n))
        for i, a in enumerate(self.lj_classes):
            for j, b in enumerate(self.lj_classes):
                sigma[i, j], eps[i, j], _ = self.pair_lj(a, b)
        return sigma, eps

    @property
    def follows_lorentz_berthelot(self) -> bool:
        """Every pair is plain Lorentz-Berthelot (OpenMM's NonbondedForce can do it alone)."""
        return all(c.molecule.mixing == "lorentz-berthelot" for c in self.components) and not self.cross_interactions

    # ------------------------------------------------------------------ topology and metadata
    def atom_type_names(self) -> list[str]:
        """Per site of each component, the atom-type name used in topologies: ``Site.type``, qualified
        as ``molecule:type`` when two molecule types use the same type name."""
        return [self._qualified(cls) for cls in self.lj_classes]

    def topology(self) -> Topology:
        """The :class:`~thermocg.frames.Topology` (atom names, molecules, masses, types) in atom order."""
        names: list[str] = []
        types: list[str] = []
        molecule_names: list[str] = []
        per_site = site_type_names(self.molecules)
        for k, c in enumerate(self.components):
            qualified = per_site[k]
            names += c.molecule.site_names * c.n_molecules
            types += qualified * c.n_molecules
            molecule_names += [c.molecule.name] * c.n_molecules
        type_names = tuple(dict.fromkeys(types))
        index = {t: i for i, t in enumerate(type_names)}
        return Topology(atom_names=names, molecule_ids=self.atom_molecule_ids(), molecule_names=molecule_names,
                        masses=self.atom_masses_amu(), type_names=type_names,
                        types=np.array([index[t] for t in types], dtype=np.int64))

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary for metadata: components, counts, and every cross LJ pair."""
        out: dict[str, Any] = {
            "name": self.name,
            "components": [{"molecule": c.molecule.name, "n_molecules": int(c.n_molecules),
                            "force_field": c.molecule.describe()} for c in self.components],
            "mole_fractions": self.mole_fractions,
            "cutoff_A": self.cutoff_A, "dispersion_correction": self.dispersion_correction,
        }
        if self.is_mixture:
            pairs = []
            for i, a in enumerate(self.lj_classes):
                for b in self.lj_classes[i + 1:]:
                    if a.component != b.component and a.epsilon_kcal_mol > 0 and b.epsilon_kcal_mol > 0:
                        sigma, eps, how = self.pair_lj(a, b)
                        pairs.append({"pair": [self._qualified(a), self._qualified(b)], "sigma_A": sigma,
                                      "epsilon_kcal_mol": eps, "from": how})
            out["cross_lj"] = pairs
        return out


def as_mixture(system: "Molecule | Mixture | str", n_molecules: int | None = None) -> Mixture:
    """A :class:`Mixture` from a mixture, or from a molecule (or its name) and its count."""
    if isinstance(system, Mixture):
        if n_molecules is not None and n_molecules != system.n_molecules:
            raise MixtureError(f"{system.name}: n_molecules={n_molecules} given for a mixture of "
                               f"{system.n_molecules} molecules (the mixture has its own counts)")
        return system
    molecule = get_molecule(system) if isinstance(system, str) else system
    if n_molecules is None:
        raise MixtureError(f"{molecule.name}: give the number of molecules")
    if isinstance(n_molecules, bool) or not isinstance(n_molecules, (int, np.integer)) or n_molecules < 1:
        raise MixtureError(f"n_molecules must be a positive integer, got {n_molecules!r}")
    return Mixture((Component(molecule, int(n_molecules)),))


def mixture_from_config(system: "SystemConfig", mole_fractions: dict[str, float] | None = None) -> Mixture:
    """The system of a config section, with the counts of a state's composition when given.

    ``mole_fractions`` are keyed as in the config (:func:`thermocg.config.molecule_key`); the total
    number of molecules is the system's (largest remainders round the counts)."""
    from thermocg.config import ConfigError

    counts = system.counts(mole_fractions)
    components = tuple(Component(get_molecule(name), n) for name, n in counts)
    cross = tuple(CrossInteraction(item.pair[0], item.pair[1], item.sigma_A, item.epsilon_kcal_mol)
                  for item in system.cross_interactions)
    try:
        return Mixture(components, cross)
    except MixtureError as exc:
        raise ConfigError(str(exc)) from None


def estimated_box_length_A(system: "SystemConfig", state: Any) -> float | None:
    """Edge (A) of the cubic all-atom box of a config's system at a state point, mixture-aware:
    (M / rho)^(1/3) with M the total mass of the state's counts (its composition redistributes the
    system's total) and rho the state's density, or for a pressure state the ideal-mixing guess of the
    components' ``density_guess_g_cm3`` (the NPT run finds the real one, so the check is an estimate
    there). ``state``: a :class:`~thermocg.config.StateConfig` or a
    :class:`~thermocg.frames.StatePoint`. None when a molecule definition cannot be loaded.

    This is the study's up-front check of every cutoff against half the box edge."""
    from thermocg import units
    from thermocg.allatom.molecules import MoleculeError

    fractions = getattr(state, "mole_fractions", None)
    if fractions is not None and not isinstance(fractions, dict):
        fractions = dict(fractions)
    try:
        mixture = Mixture(tuple(Component(get_molecule(name), n) for name, n in system.counts(fractions)))
    except (MoleculeError, MixtureError):
        return None
    density = state.density_g_cm3 if state.density_g_cm3 is not None else mixture.density_guess_g_cm3
    return units.volume_for_density_A3(mixture.mass_amu, density) ** (1.0 / 3.0)
