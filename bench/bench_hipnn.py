"""HIP-NN-TS speed and memory: thermocg's HipnnTS against hippynn 0.1.3 (HipnnQuad + HEnergy), same run.

Reference hyperparameters (128 features, 20 sensitivities, 2..13 A, r_c 15 A, 1 interaction layer, 3
atom layers: 118,954 parameters), float32, the same threads for both, the same weights, the same pair
list (the neighbour search itself is common to both and not timed). A 1,000-bead periodic frame of
1-bead methanol density (0.0128 beads/A^3, box 42.7 A), beads on a jittered lattice (closest pairs
near 2.5 A).

Measured, interleaved (ours, hippynn, ours, ...), median of ``--repeats``, as wall time and as this
process's CPU time (both threads; steadier than wall time on a shared machine):
  force     energy + forces of one frame (pair vectors from the list, forward, autograd)
  train_b1  one force-matching training step at batch 1 (forces with create_graph, loss = RMSE + MAE
            of the forces, backward, Adam step)
  train_b4  the same at batch 4
Peak memory: each (model, task) in its own subprocess; after a warm-up the kernel's peak-RSS counter is
reset (/proc/self/clear_refs) and the peak increase over the resident size before the task is read
from VmHWM (glibc's mmap threshold is fixed at 64 KiB in the children, so memory freed after the
warm-up is returned to the OS and not counted as resident before the task). hippynn runs with its default kernels (torch.compile'd PyTorch on CPU; compiled before
timing).

    python bench/bench_hipnn.py [--n-beads 1000] [--repeats 5] [--threads 2]

Prints a table and ends with one line of JSON (``speedup_vs_hippynn_*``, ``memory_ratio_vs_hippynn_*``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from tqdm import tqdm


def setup(threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def make_frames(n_beads: int, n_frames: int, seed: int):
    rng = np.random.default_rng(seed)
    side = round(n_beads ** (1 / 3))
    if side**3 != n_beads:
        raise SystemExit(f"--n-beads must be a cube, got {n_beads}")
    length = (n_beads / 0.0128) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frames = [(grid + 0.5 + rng.uniform(-0.2, 0.2, grid.shape)) / side * length for _ in range(n_frames)]
    forces = [rng.normal(0.0, 5.0, (n_beads, 3)) for _ in range(n_frames)]
    return np.stack(frames), np.eye(3) * length, np.stack(forces)


class Models:
    """Ours and hippynn's with the same weights, and one callable per (model, task)."""

    def __init__(self, n_beads: int, *, seed: int = 0) -> None:
        import torch
        from hippynn.layers.targets import HEnergy
        from hippynn.networks.hipnn import HipnnQuad

        from thermocg.neighbors import pair_index
        from thermocg.potentials.hipnn import HipnnTS, load_hippynn_state_dict

        torch.manual_seed(seed)
        self.net = HipnnQuad(n_features=128, n_sensitivities=20, dist_soft_min=2.0, dist_soft_max=13.0,
                             dist_hard_max=15.0, n_atom_layers=3, n_interaction_layers=1, n_input_features=1)
        self.head = HEnergy(self.net.feature_sizes)
        self.ours = HipnnTS(["MeOH"])
        load_hippynn_state_dict(self.ours, self.net.state_dict(), self.head.state_dict())
        self.n_params = sum(p.numel() for p in self.ours.parameters())
        positions, box, forces = make_frames(n_beads, 4, seed)
        self.positions = torch.as_tensor(positions, dtype=torch.float32)
        self.box = torch.as_tensor(box, dtype=torch.float32).expand(4, 3, 3).contiguous()
        self.forces = torch.as_tensor(forces, dtype=torch.float32)
        self.types = torch.zeros(n_beads, dtype=torch.long)
        self.pairs = {b: pair_index(self.positions[:b], self.box[:b], 15.0) for b in (1, 4)}
        self.n_pairs = len(self.pairs[1].pair_i)
        self.optimizers = {
            "ours": torch.optim.Adam(self.ours.parameters(), lr=1e-6),
            "hippynn": torch.optim.Adam([*self.net.parameters(), *self.head.parameters()], lr=1e-6),
        }

    def energy(self, which: str, graph):
        if which == "ours":
            return self.ours(graph)
        import torch

        one_hot = torch.ones(graph.positions.shape[0], 1, dtype=graph.pair_vec.dtype)
        features = self.net(one_hot, graph.pair_i, graph.pair_j, graph.pair_dist, graph.pair_vec)
        return self.head(features, graph.batch, graph.n_frames)[0].squeeze(1)

    def forces_of(self, which: str, batch: int, *, create_graph: bool):
        import torch

        from thermocg.neighbors import build_graph

        pos = self.positions[:batch].clone().requires_grad_(True)
        graph = build_graph(pos, self.box[:batch], self.types, 15.0, pairs=self.pairs[batch])
        energy = self.energy(which, graph)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
        return -grad

    def force_call(self, which: str) -> None:
        self.forces_of(which, 1, create_graph=False)

    def train_step(self, which: str, batch: int) -> None:
        optimizer = self.optimizers[which]
        optimizer.zero_grad(set_to_none=True)
        diff = self.forces_of(which, batch, create_graph=True) - self.forces[:batch]
        loss = diff.square().mean().sqrt() + diff.abs().mean()
        loss.backward()
        optimizer.step()

    def task(self, which: str, name: str):
        if name == "force":
            return lambda: self.force_call(which)
        batch = {"train_b1": 1, "train_b4": 4}[name]
        return lambda: self.train_step(which, batch)


TASKS = ("force", "train_b1", "train_b4")
WHICH = ("ours", "hippynn")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_memory(which: str, task: str, n_beads: int, threads: int) -> dict:
    """In this (fresh) process: warm up, reset the peak-RSS counter, run the task once, report MiB."""
    setup(threads)
    models = Models(n_beads)
    run = models.task(which, task)
    run()  # warm-up (hippynn's torch.compile happens here)
    import gc

    gc.collect()
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    run()
    peak = _rss_kib("VmHWM")
    return {"peak_increase_MiB": (peak - before) / 1024, "peak_total_MiB": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", nargs=2, metavar=("WHICH", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(measure_memory(*args.memory_child, args.n_beads, args.threads)))
        return

    setup(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    models = Models(args.n_beads)
    print(f"{args.n_beads} beads, {models.n_pairs} ordered pairs, {models.n_params} parameters, "
          f"float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    assert models.n_params == 118_954, models.n_params
    # agreement first: the same weights must give the same forces
    f_ours = models.forces_of("ours", 1, create_graph=False)
    f_hip = models.forces_of("hippynn", 1, create_graph=False)
    max_diff = float((f_ours - f_hip).abs().max())
    print(f"max |F_ours - F_hippynn| = {max_diff:.2e} kcal/mol/A (max |F| {float(f_hip.abs().max()):.3f})")

    times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in WHICH for t in TASKS}
    cpu_times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in WHICH for t in TASKS}
    for task in TASKS:
        for which in WHICH:
            models.task(which, task)()  # warm-up / compile
    for _ in tqdm(range(args.repeats), desc="interleaved repeats"):
        for task in TASKS:
            for which in WHICH:
                run = models.task(which, task)
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                times[(which, task)].append(time.perf_counter() - start)
                cpu_times[(which, task)].append(time.process_time() - start_cpu)

    result: dict[str, float | int | str] = {"n_beads": args.n_beads, "threads": args.threads,
                                             "max_force_diff": max_diff}
    print(f"\n{'task':10s} {'ours s':>10s} {'hippynn s':>10s} {'speedup':>8s}   "
          f"{'ours cpu s':>10s} {'hippynn cpu s':>13s} {'cpu speedup':>11s}")
    for task in TASKS:
        ours = statistics.median(times[("ours", task)])
        theirs = statistics.median(times[("hippynn", task)])
        ours_cpu = statistics.median(cpu_times[("ours", task)])
        theirs_cpu = statistics.median(cpu_times[("hippynn", task)])
        result[f"ours_{task}_s"] = round(ours, 4)
        result[f"hippynn_{task}_s"] = round(theirs, 4)
        result[f"speedup_vs_hippynn_{task}"] = round(theirs / ours, 2)
        result[f"cpu_speedup_vs_hippynn_{task}"] = round(theirs_cpu / ours_cpu, 2)
        print(f"{task:10s} {ours:10.4f} {theirs:10.4f} {theirs / ours:8.2f}x   "
              f"{ours_cpu:10.4f} {theirs_cpu:13.4f} {theirs_cpu / ours_cpu:10.2f}x")

    if not args.skip_memory:
        print(f"\n{'task':10s} {'ours MiB':>10s} {'hippynn MiB':>12s} {'ratio':>7s}   (peak RSS increase)")
        for task in TASKS:
            mem = {}
            for which in WHICH:
                out = subprocess.run(
                    [sys.executable, __file__, "--n-beads", str(args.n_beads), "--threads", str(args.threads),
                     "--memory-child", which, task],
                    check=True, capture_output=True, text=True,
                    # a fixed mmap threshold: freed tensors go back to the OS, so RSS tracks live memory
                    env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
                )
                mem[which] = json.loads(out.stdout.strip().splitlines()[-1])
            ours, theirs = mem["ours"]["peak_increase_MiB"], mem["hippynn"]["peak_increase_MiB"]
            result[f"ours_{task}_peak_MiB"] = round(ours, 1)
            result[f"hippynn_{task}_peak_MiB"] = round(theirs, 1)
            result[f"memory_ratio_vs_hippynn_{task}"] = round(ours / theirs, 3)
            print(f"{task:10s} {ours:10.1f} {theirs:12.1f} {ours / theirs:7.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
