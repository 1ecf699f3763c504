"""scripts/frontier.py: its table and figure from known results, its input checks, and (slow) the whole
script on a tiny Lennard-Jones "demo run" (three states, 64 beads), including a resumed rerun."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import lj_force_frames

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frontier():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "scripts" / "frontier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def known_results() -> dict:
    states = ["T280_rho0.805", "T310_rho0.777", "T340_rho0.746"]
    md = {"T280_rho0.805": {"rdf_error": 0.0411, "adf_error": 0.1211},
          "T310_rho0.777": {"rdf_error": 0.0322, "adf_error": 0.0922},
          "T340_rho0.746": {"blowup": "simulation blew up at step 80"}}
    network = dict(n_features=32, n_sensitivities=12, n_interaction_layers=1, n_atom_layers=2, cutoff_A=8.07,
                   dist_soft_min_A=1.925, dist_soft_max_A=6.994)
    bench = {"cg_timestep_fs": 12.0, "cg_single_ns_per_day": 40.5, "cg_respa_ns_per_day": 60.25,
             "allatom_ns_per_day": 8.0,
             "speedup_single_vs_openmm_allatom_ns_per_day": 5.06, "speedup_vs_openmm_allatom_ns_per_day": 7.53,
             "repeat_cg_vs_aa": [4.0, 5.0, 7.0], "repeat_cg_vs_aa_median": 5.0, "repeat_cg_vs_aa_min": 4.0,
             "repeat_cg_vs_aa_max": 7.0}
    return {"states": states, "train_state": "T310_rho0.777",
            "noise": {s: {"rdf_error": 0.03 + 0.001 * k, "adf_error": 0.09 + 0.001 * k} for k, s in enumerate(states)},
            "sizes": {"demo": {"train": {"network": network, "n_parameters": 12345}, "md": md, "bench": bench,
                               "timestep_check": {"verdict": "unchanged (RDF 0.01 / floor 0.02)"}}}}


def test_table_puts_each_figure_in_its_column(frontier):
    text = frontier.table(known_results())
    lines = text.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(head, [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["size"] == "demo" and row["features / sens. / atom layers"] == "32 / 12 / 2"
    assert row["cutoff (A)"] == "8.07" and row["parameters"] == "12,345"
    assert row["CG step (fs)"] == "12" and row["CG ns/day"] == "40.500" and row["CG r-RESPA ns/day"] == "60.250"
    assert row["AA OpenMM ns/day"] == "8.000" and row["CG/AA"] == "5.06" and row["CG/AA (r-RESPA)"] == "7.53"
    assert row["CG/AA per repeat: median (range)"] == "5.00 (4.00-7.00)"
    # the training state first, marked; the held-out states after it
    assert head.index("RDF err T310_rho0.777 (train)") < head.index("RDF err T280_rho0.805")
    assert row["RDF err T310_rho0.777 (train)"] == "0.0322" and row["ADF err T280_rho0.805"] == "0.1211"
    assert row["RDF err T340_rho0.746"] == "blew up" and row["ADF err T340_rho0.746"] == "blew up"
    assert row["timestep check at the train state"].startswith("unchanged")
    assert "T280_rho0.805: RDF 0.0300, ADF 0.0900;" in text and "T340_rho0.746: RDF 0.0320, ADF 0.0920;" in text
    assert "GROMACS" not in text
    # with a GROMACS figure: CG single step against it, in its own column
    results = {**known_results(), "gromacs": {"gromacs_ns_per_day": 20.25, "repeats_ns_per_day": [20.0, 20.25, 21.0],
                                              "openmm_ns_per_day": 8.1, "gromacs_vs_openmm": 2.5,
                                              "n_molecules": 1000, "n_atoms": 3000, "threads": 1, "timestep_fs": 2.0}}
    lines = frontier.table(results).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(head, [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["CG/AA GROMACS"] == "2.02" and row["RDF err T310_rho0.777 (train)"] == "0.0322"  # 5.06 / 2.5
    assert "20.250 ns/day (median of 20.000, 20.250, 21.000), against OpenMM interleaved with it 8.100" in lines[-1]


def test_repeat_ratios_from_the_benchmark_output(frontier):
    output = ("  repeat 0: ours 20.00 steps/s, ours r-RESPA 9.00 outer steps/s, all-atom 40.0 steps/s\n"
              "  repeat 1: ours 10.00 steps/s, ours r-RESPA 5.00 outer steps/s, all-atom 10.0 steps/s\n"
              "  repeat 2: ours 30.00 steps/s, all-atom 30.0 steps/s\n")
    got = frontier.repeat_ratios(output, 12.0, 2.0)
    assert got["repeat_cg_vs_aa"] == pytest.approx([3.0, 6.0, 6.0])  # (20 x 12) / (40 x 2), ...
    assert got["repeat_cg_vs_aa_median"] == pytest.approx(6.0) and got["repeat_cg_vs_aa_min"] == pytest.approx(3.0)
    assert frontier.repeat_ratios("no repeats here", 12.0, 2.0) == {}


def test_figure_is_written(frontier, tmp_path):
    path = tmp_path / "frontier.png"
    frontier.figure(known_results(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no partial file left


def test_bad_inputs_name_the_option(frontier, tmp_path):
    with pytest.raises(SystemExit, match=r"--sizes: unknown size\(s\) \['huge'\]"):
        frontier.parse_sizes("demo,huge")
    with pytest.raises(SystemExit, match=r"--demo-run: .*T280_rho0.805.h5md does not exist"):
        frontier.main(["--demo-run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--no-bench",
                       "--no-gromacs"])
    with pytest.raises(SystemExit, match=r"--train-state 'T999' is not a state of"):
        frontier.main(["--demo-run", str(tmp_path), "--out", str(tmp_path / "out"), "--train-state", "T999"])


def tiny_demo_run(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A run directory with the CG datasets of three LJ "states" (64 beads, 30 frames each, forces of a
    Lennard-Jones potential), and a copy of the demo config naming those states."""
    from thermocg.dataset import write_frames
    from thermocg.frames import StatePoint
    from thermocg.potentials.lj import LennardJones
    from thermocg.rundir import RunDir

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    lj = LennardJones(("MeOH",), epsilon_kcal_mol=0.6, sigma_A=3.7, cutoff_A=7.0)
    run = tmp_path / "demo"
    for state in config["states"]:
        point = StatePoint(state["temperature_K"], density_g_cm3=state["density_g_cm3"])
        frames = lj_force_frames(lj, 30, rng=rng, n_particles=64, density=0.0146, state=point)
        frames.time_fs = np.arange(30) * 50.0
        write_frames(frames, RunDir(run).cg_dataset(point.label), kind="cg")
    config["train"].update(max_epochs=2, early_stopping_epochs=2, batch_size=4, max_batch_size=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return run, path


@pytest.mark.slow
def test_the_script_on_a_tiny_run_and_its_rerun(frontier, tmp_path, rng):
    from thermocg.dataset import read_frames
    from thermocg.study.stages import hipnn_cutoff_A

    run, config = tiny_demo_run(tmp_path, rng)
    out = tmp_path / "out"
    argv = ["--demo-run", str(run), "--out", str(out), "--config", str(config), "--sizes", "small,demo",
            "--duration-ps", "2.4", "--no-bench", "--no-gromacs"]
    assert frontier.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    labels = results["states"]
    assert set(results["sizes"]) == {"small", "demo"}
    # the demo's size takes the largest cutoff the boxes allow (the study's rule), "small" its own 6 A
    boxes_cutoff = hipnn_cutoff_A(frontier.study_config(config, threads=1), out / "run")
    assert results["sizes"]["demo"]["train"]["network"]["cutoff_A"] == pytest.approx(boxes_cutoff)
    assert results["sizes"]["small"]["train"]["network"]["cutoff_A"] == 6.0
    assert results["sizes"]["small"]["train"]["network"]["n_features"] == 16
    for entry in results["sizes"].values():
        assert set(entry["md"]) == set(labels)
        for record in entry["md"].values():
            assert record["n_steps"] == 200 or record["blowup"]  # 2.4 ps at 12 fs
            if not record["blowup"]:
                assert 0.0 <= record["rdf_error"] and 0.0 <= record["adf_error"] <= 2.0
        assert "verdict" in entry["timestep_check"]
    # the copied datasets are the demo run's, unchanged
    for label in labels:
        ours, theirs = read_frames(out / "run" / "cg" / f"{label}.h5md"), read_frames(run / "cg" / f"{label}.h5md")
        np.testing.assert_array_equal(ours.positions, theirs.positions)
    table = (out / "frontier.md").read_text()
    assert table.count("\n| small |") == 1 and table.count("\n| demo |") == 1
    # a rerun trains nothing new and runs no MD again: the records are kept as they were
    assert frontier.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    for size in ("small", "demo"):
        assert again["sizes"][size]["md"] == results["sizes"][size]["md"]
        assert again["sizes"][size]["timestep_check"] == results["sizes"][size]["timestep_check"]
        assert again["sizes"][size]["train"]["n_epochs"] == results["sizes"][size]["train"]["n_epochs"]


def test_seeds_table_gives_each_seed_and_the_spread(frontier):
    first, second = known_results(), known_results()
    first["seed"], second["seed"] = 2024, 2025
    second["sizes"]["demo"]["md"]["T310_rho0.777"] = {"rdf_error": 0.0300, "adf_error": 0.1000}
    lines = frontier.seeds_table([first, second]).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, [c.strip() for c in line.strip("|").split("|")])) for line in lines[2:]]
    assert [r["state"] for r in rows] == ["T310_rho0.777 (train)", "T280_rho0.805", "T340_rho0.746"]
    assert rows[0]["RDF err seed 2024"] == "0.0322" and rows[0]["RDF err seed 2025"] == "0.0300"
    assert rows[0]["RDF spread"] == "0.0022" and rows[0]["ADF spread"] == "0.0078"
    assert rows[1]["RDF spread"] == "0.0000" and rows[2]["RDF spread"] == "-"  # both blew up at 340 K


def test_figure_overlays_other_seeds(frontier, tmp_path):
    other = known_results()
    frontier.figure(known_results(), tmp_path / "a.png", other_seeds=[other])
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_collect_merges_sizes_of_runs_on_the_same_data(frontier, tmp_path):
    one, two = known_results(), known_results()
    one["seed"] = two["seed"] = 2024
    two["sizes"] = {"reference": {**two["sizes"]["demo"], "md": {}}}
    two["gromacs"] = {"gromacs_ns_per_day": 30.0}
    for name, part in (("a", one), ("b", two)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    merged = frontier.collect([tmp_path / "a", tmp_path / "b"], ["reference", "demo"])
    assert list(merged["sizes"]) == ["reference", "demo"] and merged["gromacs"] == {"gromacs_ns_per_day": 30.0}
    assert merged["sizes"]["demo"] == one["sizes"]["demo"]
    with pytest.raises(SystemExit, match=r"no directory holds the size\(s\) \['small'\]"):
        frontier.collect([tmp_path / "a", tmp_path / "b"], ["small", "demo"])
    two["noise"]["T280_rho0.805"]["rdf_error"] = 0.5  # other data: refused
    (tmp_path / "b" / "results.json").write_text(json.dumps(two))
    with pytest.raises(SystemExit, match=r"--collect: .*b differs from .*a in 'noise'"):
        frontier.collect([tmp_path / "a", tmp_path / "b"], ["demo"])
