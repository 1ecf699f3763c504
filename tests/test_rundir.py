"""The run directory's one atomic write: a file appears whole under its name, or not at all."""

import pytest

from thermocg.rundir import atomic_path, atomic_savefig, atomic_write_bytes, atomic_write_text, partial_path


def test_atomic_path_renames_on_success_and_creates_the_parent(tmp_path):
    target = tmp_path / "deep" / "dir" / "out.bin"
    with atomic_path(target) as partial:
        assert partial == partial_path(target)
        partial.write_bytes(b"abc")
        assert not target.exists()  # not visible under its name while being written
    assert target.read_bytes() == b"abc"
    assert not partial_path(target).exists()


def test_atomic_path_keeps_the_old_file_and_removes_the_partial_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as partial:
            partial.write_text("half of the new")
            raise RuntimeError("killed half way")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_bytes_and_text_replace_whole_files(tmp_path):
    target = tmp_path / "x.dat"
    atomic_write_bytes(target, b"\x00\x01")
    atomic_write_text(target, "text")
    assert target.read_text() == "text"


def test_atomic_savefig_keeps_the_suffix_for_the_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = atomic_savefig(fig, tmp_path / "fig.png")
    plt.close(fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
