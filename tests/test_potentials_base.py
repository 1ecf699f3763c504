"""The potential protocol with a known answer: Lennard-Jones, sums, and model files."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from thermocg.potentials import (ModelFileError, SumPotential, energy_and_forces, load_potential,
                                 read_model_header, save_potential)
from thermocg.potentials.lj import LennardJones


def two_beads(r):
    pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64)
    return pos, torch.eye(3, dtype=torch.float64) * 30.0, torch.zeros(2, dtype=torch.long)


def test_two_beads_known_force():
    lj = LennardJones(["A"], epsilon_kcal_mol=0.2, sigma_A=3.5, cutoff_A=12.0, switch_width_A=0.0)
    r = 4.0
    e, f = energy_and_forces(lj, *two_beads(r))
    sr6 = (3.5 / r) ** 6
    src6 = (3.5 / 12.0) ** 6
    assert e.item() == pytest.approx(4 * 0.2 * (sr6**2 - sr6) - 4 * 0.2 * (src6**2 - src6), rel=1e-12)
    fmag = 24 * 0.2 * (2 * sr6**2 - sr6) / r  # -du/dr, repulsive if positive
    assert f[0, 1, 0].item() == pytest.approx(fmag, rel=1e-12)
    assert f[0, 0, 0].item() == pytest.approx(-fmag, rel=1e-12)


def test_sum_and_save_load_in_fresh_process(tmp_path):
    a = LennardJones(["A", "B"], epsilon_kcal_mol=[[0.2, 0.1], [0.1, 0.3]], sigma_A=[[3.5, 3.0], [3.0, 3.2]], cutoff_A=9.0)
    b = LennardJones(["A", "B"], epsilon_kcal_mol=0.05, sigma_A=2.0, cutoff_A=6.0)
    total = SumPotential([a, b])
    assert total.cutoff_A == 9.0
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 20, (1, 30, 3))
    box = np.eye(3) * 20
    types = np.arange(30) % 2
    e, f = energy_and_forces(total, pos, box, types)
    ea, fa = energy_and_forces(a, pos, box, types)
    eb, fb = energy_and_forces(b, pos, box, types)
    assert torch.allclose(e, ea + eb) and torch.allclose(f, fa + fb)
    path = save_potential(total, tmp_path / "m.safetensors", provenance={"seed": 1})
    header = read_model_header(path)
    assert header["description"]["kind"] == "sum" and header["provenance"]["seed"] == 1
    np.save(tmp_path / "pos.npy", pos)
    code = (
        "import numpy as np, torch; from thermocg.potentials import load_potential, energy_and_forces;"
        f"p = load_potential('{path}'); pos = np.load('{tmp_path / 'pos.npy'}');"
        "e, f = energy_and_forces(p, pos, np.eye(3) * 20, np.arange(30) % 2);"
        f"np.save('{tmp_path / 'f.npy'}', f.numpy())"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), f.numpy())


def test_bad_model_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_potential(bad)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_potential(tmp_path / "none.safetensors")


def test_unknown_bead_type_is_an_error():
    lj = LennardJones(["A"], epsilon_kcal_mol=0.2, sigma_A=3.5, cutoff_A=9.0)
    with pytest.raises(ValueError, match="bead type 'X' is unknown"):
        lj.type_indices(("A", "X"), np.array([0, 1]))


def _model(tmp_path):
    lj = LennardJones(["A", "B"], epsilon_kcal_mol=[[0.2, 0.1], [0.1, 0.3]], sigma_A=[[3.5, 3.0], [3.0, 3.2]],
                      cutoff_A=9.0)
    return lj, save_potential(lj, tmp_path / "m.safetensors")


def test_a_flipped_byte_in_the_weights_is_refused_by_the_checksum(tmp_path):
    lj, path = _model(tmp_path)
    assert read_model_header(path)["weights_sha256"]
    load_potential(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor's bytes (the tensor data follow the JSON header)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m.safetensors: damaged model file: the weights do not match the checksum"):
        load_potential(path)


def test_a_damaged_header_names_the_file(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    lj, path = _model(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    for key, value, message in (("format_version", "one", "format_version 'one' is not a number"),
                                ("description", "{kind: x", "description is not valid JSON"),
                                ("provenance", "[1,", "provenance is not valid JSON")):
        damaged = tmp_path / f"damaged_{key}.safetensors"
        save_file(tensors, str(damaged), metadata=dict(meta, **{key: value}))
        with pytest.raises(ModelFileError, match=rf"damaged_{key}.safetensors: damaged model header \({message}"):
            load_potential(damaged)


def test_model_files_get_the_ordinary_file_mode(tmp_path):
    import os
    import stat

    _, path = _model(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
