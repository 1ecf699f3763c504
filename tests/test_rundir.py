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


# --------------------------------------------------------------------------------------------------
# the run-directory lock: two real processes
# --------------------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from thermocg.rundir import run_dir_lock
with run_dir_lock(sys.argv[1], command="holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(run_dir):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_at_once_naming_the_holder_and_a_killed_holder_releases(tmp_path):
    import signal
    import subprocess
    import sys

    from thermocg.rundir import RunDirLocked, run_dir_lock

    run_dir = tmp_path / "run"
    holder = _start_holder(run_dir)
    try:
        with pytest.raises(RunDirLocked, match=rf"{run_dir}: the run directory is in use by process {holder.pid} "
                                               r"on .*\(holder, since"):
            with run_dir_lock(run_dir):
                pass
        # the CLI: a config-reading command refuses with exit code 2 and the same message, doing nothing
        config = tmp_path / "c.yaml"
        config.write_text("states: [{temperature_K: 300, density_g_cm3: 0.78}]\n")
        cli = subprocess.run([sys.executable, "-m", "thermocg", "rdf", str(config), "--run-dir", str(run_dir)],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2
        assert f"in use by process {holder.pid}" in cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
        holder.wait()
    with run_dir_lock(run_dir) as lock_file:  # the kernel released the dead holder's lock
        assert lock_file.exists()


def test_the_lock_nests_in_one_process_and_is_released_after(tmp_path):
    from thermocg.rundir import _HELD, run_dir_lock

    with run_dir_lock(tmp_path):
        with run_dir_lock(tmp_path):  # the study calling a stage that also locks
            pass
        assert tmp_path.resolve() in _HELD
    assert tmp_path.resolve() not in _HELD
    holder = _start_holder(tmp_path)  # another process can take it now
    holder.kill()
    holder.wait()


def test_a_run_directory_that_cannot_be_written_is_a_clear_error_before_any_work(tmp_path):
    import os

    from thermocg.rundir import RunDirError, run_dir_lock

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match=f"{blocker / 'run'}: the run directory is not writable"):
        with run_dir_lock(blocker / "run"):
            pass
    if os.geteuid() != 0:  # root writes into read-only directories
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(RunDirError, match="not writable"):
                with run_dir_lock(ro):
                    pass
        finally:
            ro.chmod(0o755)
