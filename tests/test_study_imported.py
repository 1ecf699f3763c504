"""The shipped example of a study on imported data (configs/imported.yaml), run on files the tests write
as LAMMPS, GROMACS and ASE (extxyz) write them: first from random frames (the config's keys read every
format, each state's box and molecule count come from its data), then, slow, from short OpenMM runs
through the whole study."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import write_engine_files
from thermocg import study as st
from thermocg.config import ConfigError, load_config
from thermocg.frames import Frames, Topology

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "imported.yaml"
#: the example's state points: file stem, engine
STATES = {"T280_rho0.805": ("T280", "lammps"), "T310_rho0.777": ("T310", "gromacs"),
          "T340_rho0.746": ("T340", "extxyz")}


def methanol_topology(n_molecules: int) -> Topology:
    return Topology(atom_names=["CH3", "O", "H"] * n_molecules, molecule_ids=np.repeat(np.arange(n_molecules), 3),
                    molecule_names=["methanol_trappe"] * n_molecules,
                    masses=np.tile([15.035, 15.999, 1.008], n_molecules), type_names=("CH3", "O", "H"),
                    types=np.tile([0, 1, 2], n_molecules))


def random_frames(rng: np.random.Generator, n_molecules: int, box_A: float, n_frames: int = 4) -> Frames:
    """Molecules (rigid, TraPPE geometry) at random places: enough to read, validate, import and map."""
    from thermocg.allatom.molecules import get_molecule

    site_positions = get_molecule("methanol_trappe").positions_A
    centres = rng.uniform(0, box_A, (n_frames, n_molecules, 1, 3))
    positions = (centres + site_positions[None, None]).reshape(n_frames, -1, 3)
    return Frames(positions=positions, box=np.eye(3) * box_A, forces=rng.normal(size=positions.shape),
                  time_fs=np.arange(n_frames) * 50.0, types=np.tile([0, 1, 2], n_molecules),
                  type_names=("CH3", "O", "H"), masses=np.tile([15.035, 15.999, 1.008], n_molecules))


def example_layout(tmp_path: Path, frames: dict[str, tuple[Frames, Topology]]) -> Path:
    """The example config at tmp/configs/imported.yaml with its data at tmp/data/imported/, as the
    config's relative paths expect; returns the config's path."""
    config_path = tmp_path / "configs" / "imported.yaml"
    config_path.parent.mkdir(parents=True)
    shutil.copy(EXAMPLE, config_path)
    for label, (stem, engine) in STATES.items():
        data, topology = frames[label]
        write_engine_files(data, topology, tmp_path / "data" / "imported", stem, engine,
                           ns_per_day=123.0 if engine == "extxyz" else None)
    return config_path


def test_example_config_reads_every_format_and_checks_each_state_against_its_data(tmp_path, rng):
    sizes = {"T280_rho0.805": (10, 20.0), "T310_rho0.777": (12, 21.0), "T340_rho0.746": (14, 22.0)}
    frames = {label: (random_frames(rng, n, box), methanol_topology(n)) for label, (n, box) in sizes.items()}
    config = load_config(example_layout(tmp_path, frames))
    assert config.run_dir == str((tmp_path / "runs" / "imported").resolve())
    assert [imp.format for imp in config.imports] == ["lammps", "gromacs", "extxyz"]
    states = st.validate_study(config)
    assert list(states) == list(STATES)
    boxes = st.state_boxes(config)
    for label, (n, box) in sizes.items():
        assert boxes[label].n_molecules == n  # from the data, not from system.n_molecules (256)
        assert boxes[label].half_width_A == pytest.approx(box / 2, rel=1e-5)
        assert boxes[label].density_g_cm3 == pytest.approx(n * 32.042 / box**3 * 1.66053906660, rel=1e-4)
    # every import reads, and maps to the same bead type (named after the molecule definition)
    run_dir = tmp_path / "run"
    for label in STATES:
        st.stages.generate_or_import(config, run_dir, label)
        dataset = st.stages.map_state(config, run_dir, label).dataset
        from thermocg.dataset import read_frames

        cg = read_frames(dataset)
        assert cg.type_names == ("methanol_trappe",) and cg.n_particles == sizes[label][0]
        np.testing.assert_allclose(cg.time_fs, np.arange(4) * 50.0, atol=1e-3)
    # a cutoff that fits the generated defaults but not the imported boxes is refused before any work
    config.pair.cutoff_A = 10.2
    with pytest.raises(ConfigError, match=r"pair\.cutoff_A: 10.2 A does not fit the box of state "
                                          r"T280_rho0.805 \(imported: 10 molecules"):
        st.validate_study(config)


def openmm_state(label: str, out_dir: Path, seed: int) -> tuple[Frames, Topology]:
    """A short OpenMM run of 32 TraPPE methanols at the state ``label`` (all-atom frames and topology)."""
    from thermocg.allatom.runner import generate_state
    from thermocg.config import GenerateConfig
    from thermocg.dataset import read_frames
    from thermocg.frames import StatePoint

    temperature, density = float(label.split("_")[0][1:]), float(label.split("rho")[1])
    settings = GenerateConfig(n_threads=1, equilibration_ps=0.5, production_ps=1.5, save_interval_fs=50.0,
                              thermo_interval_fs=100.0, save_velocities=False, platform="CPU")
    traj = generate_state("methanol_trappe", StatePoint(temperature, density_g_cm3=density), n_molecules=32,
                          settings=settings, seed=seed, out_dir=out_dir / label, progress=False)
    return read_frames(traj), Topology.load(traj.parent / "topology.json")


@pytest.mark.slow
def test_example_study_runs_on_imported_files(tmp_path):
    frames = {label: openmm_state(label, tmp_path / "openmm", seed=k + 1) for k, label in enumerate(STATES)}
    config_path = example_layout(tmp_path, frames)
    (tmp_path / "data" / "imported" / "log.lammps").write_text(
        "Performance: 31.250 ns/day, 0.768 hours/ns, 361.690 timesteps/s\n")
    config = load_config(config_path)
    # the example's sizes, shrunk to a test: 32 molecules (12.8-13.0 A boxes), tiny models, 1 ps of CG MD
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, n_features=8, n_sensitivities=6, n_atom_layers=1, max_epochs=2,
                                  batch_size=4, max_batch_size=8, patience_epochs=1, early_stopping_epochs=2,
                                  frame_stride=1),
        pair=dataclasses.replace(config.pair, cutoff_A=6.0, spacing_A=0.25, min_pairs_per_interval=5),
        simulate=dataclasses.replace(config.simulate, duration_ps=1.0, save_interval_fs=20.0, thermo_interval_fs=20.0,
                                     device="cpu"),
        study=dataclasses.replace(config.study, single_states=["T310_rho0.777"], force_eval_frames=10,
                                  parity_samples=200, progress=False))
    out = st.run_study(config, config.run_dir)
    assert not out.failed
    run_dir = Path(config.run_dir)
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["imported"] == list(STATES)
    for label in STATES:  # the real density of the data, beside the declared one
        declared = summary["states"][label]["density_g_cm3"]
        assert summary["measured_density_g_cm3"][label] == pytest.approx(declared, rel=2e-3)
    assert summary["aa_ns_per_day"] == {"T280_rho0.805": 31.25, "T310_rho0.777": None, "T340_rho0.746": 123.0}
    assert summary["aa_speed_note"]["T310_rho0.777"] == \
        "no GROMACS log with a Performance line beside T310.trr (T310.log or md.log)"
    for family in ("hipnn_ts", "mscg"):
        row = summary["matrices"]["rdf_error"][family]["pooled"]
        assert all(v is not None and 0 <= v < 1.5 for v in row.values())
    md = (run_dir / "report" / "summary.md").read_text()
    assert "| T340_rho0.746 | temperature_K = 340, density_g_cm3 = 0.746 |" in md and "| imported |" in md
    assert "Force errors were computed on T280_rho0.805: the " in md  # held-out frames, named
    assert st.run_study(config, config.run_dir).ran == []
