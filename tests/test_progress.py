"""thermocg.progress: a bar on a terminal, plain lines every few seconds elsewhere (no carriage returns)."""

from __future__ import annotations

import io

import pytest

from thermocg.progress import Progress, format_duration, progress_mode


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_most_every_interval_and_at_the_end():
    stream, clock = io.StringIO(), Clock()
    with Progress(10, description="study", unit="units", stream=stream, interval_s=5.0, clock=clock) as p:
        assert p.mode == "lines"
        for k in range(10):
            clock.t += 2.0  # one unit every 2 s: a line at 6 s (3 units) and at 12 s (6 units), then the last
            p.set_postfix(f"unit {k}")
            p.update()
        p.write("thermocg study: md/x failed: RuntimeError: boom")
    text = stream.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [
        "study: 3/10 units (30%), 6s elapsed, about 14s left [unit 2]",
        "study: 6/10 units (60%), 12s elapsed, about 8s left [unit 5]",
        "study: 9/10 units (90%), 18s elapsed, about 2s left [unit 8]",
        "thermocg study: md/x failed: RuntimeError: boom",
        "study: 10/10 units (100%), done in 20s",
    ]


def test_modes():
    assert progress_mode("auto", io.StringIO()) == "lines"
    assert progress_mode("auto", Terminal()) == "bar"
    assert progress_mode("off", Terminal()) == "off"
    with pytest.raises(ValueError, match="progress mode"):
        progress_mode("loud")
    stream = io.StringIO()
    with Progress(3, description="x", mode="off", stream=stream) as p:
        p.update(3)
        p.write("still printed")
    assert stream.getvalue() == "still printed\n"
    bar = Terminal()
    with Progress(3, description="ref T300", unit="frames", stream=bar) as p:
        p.update(3)
    assert p.mode == "bar" and "ref T300" in bar.getvalue()


def test_environment_overrides_auto(monkeypatch):
    monkeypatch.setenv("THERMOCG_PROGRESS", "lines")
    assert progress_mode("auto", Terminal()) == "lines"
    monkeypatch.setenv("THERMOCG_PROGRESS", "off")
    assert progress_mode("auto", io.StringIO()) == "off"
    assert progress_mode("bar", io.StringIO()) == "bar"  # an explicit mode wins


def test_unknown_total_and_durations():
    stream, clock = io.StringIO(), Clock()
    p = Progress(None, description="eval", unit="frames", stream=stream, interval_s=0.0, clock=clock)
    clock.t += 75
    p.update(40)
    p.close()
    assert stream.getvalue().splitlines() == ["eval: 40 frames, 1m15s elapsed", "eval: 40 frames, done in 1m15s"]
    assert format_duration(7325) == "2h02m" and format_duration(float("nan")) == "?"


def test_resumed_work_estimates_from_the_items_done_since():
    stream, clock = io.StringIO(), Clock()
    with Progress(100, description="train", unit="epochs", stream=stream, interval_s=0.0, clock=clock,
                  initial=40) as p:
        clock.t += 30.0
        p.update(10)  # 10 epochs in 30 s since the resume: 50 left take 150 s (not 30 / 50 * 50 = 30 s)
    assert stream.getvalue().splitlines()[0] == "train: 50/100 epochs (50%), 30s elapsed, about 2m30s left"
    with pytest.raises(ValueError, match="initial"):
        Progress(5, description="x", initial=6, mode="off")


def test_md_progress_in_a_log_is_plain_lines(capsys, monkeypatch):
    """A CG run's progress written to a log file: plain lines, no carriage returns."""
    from helpers import engine_test_liquid

    from thermocg.md import simulate

    monkeypatch.setenv("THERMOCG_PROGRESS", "lines")
    frame, lj = engine_test_liquid(216, network=False)
    simulate(lj, frame, temperature_K=120.0, timestep_fs=2.0, n_steps=40, seed=1, save_interval_steps=20,
             keep_frames=False, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    last = [line for line in err.splitlines() if line.startswith("MD")][-1]
    assert last.startswith("MD langevin: 40/40 steps (100%), done in"), err
