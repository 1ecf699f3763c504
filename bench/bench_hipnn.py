"""HIP-NN-TS speed and memory: thermocg's HipnnTS against hippynn 0.1.3 (HipnnQuad + HEnergy), same run.

Reference hyperparameters (128 features, 20 sensitivities, 2..13 A, r_c 15 A, 1 interaction layer, 3
atom layers: 118,954 parameters), float32, the same threads for both, the same weights, the same pair
list (the neighbour search itself is common to both and not timed). A 1,000-bead periodic frame of
1-bead methanol density (0.0128 beads/A^3, box 42.7 A), beads on a jittered lattice (closest pairs
near 2.5 A).

Measured, interleaved (ours, hippynn, ours, ...), median of ``--repeats``, as wall time and as this
process's CPU time (all threads; steadier than wall time on a shared machine), at each thread count of
``--threads`` (1 and 2 by default):
  force     energy + forces of one frame (pair vectors from the list, forward, autograd)
  train_b1  one force-matching training step at batch 1 (forces with create_graph, loss = RMSE + MAE
            of the forces, backward, Adam step)
  train_b4  the same at batch 4
Peak memory: each (model, task) in its own subprocess; after a warm-up the kernel's peak-RSS counter is
reset (/proc/self/clear_refs) and the peak increase over the resident size before the task is read
from VmHWM (glibc's mmap threshold is fixed at 64 KiB in the children, so memory freed after the
warm-up is returned to the OS and not counted as resident before the task), at the first thread count.
hippynn runs with its default kernels (torch.compile'd PyTorch on CPU; compiled before timing). Ours
runs with its default kernel choice (the compiled fused kernel when it is available; the output says
which); ``--with-fallback`` adds our PyTorch path as a third contestant, and ``--profile`` prints
where our force call and training step spend their time (CPU time per stage).

    python bench/bench_hipnn.py [--n-beads 1000] [--repeats 5] [--threads 1,2] [--with-fallback] [--profile]

Prints tables and ends with one line of JSON: ``speedup_vs_hippynn_force_1thread``,
``speedup_vs_hippynn_force_2threads``, ``speedup_vs_hippynn_train_b1`` and ``_train_b4`` (at the first
thread count; the other counts carry a ``_<n>threads`` suffix), ``memory_ratio_vs_hippynn_*``,
``max_force_diff`` (max |F_ours - F_hippynn|, kcal/mol/A, float32), the kernel used, and the load average
of the machine before and after (the figures are as measured under that load).
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
        self.fallback = HipnnTS(["MeOH"])  # the same weights on the PyTorch path
        self.fallback.load_state_dict(self.ours.state_dict())
        self.fallback.kernel = "pytorch"
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
            "ours_pytorch": torch.optim.Adam(self.fallback.parameters(), lr=1e-6),
            "hippynn": torch.optim.Adam([*self.net.parameters(), *self.head.parameters()], lr=1e-6),
        }

    def energy(self, which: str, graph):
        if which == "ours":
            return self.ours(graph)
        if which == "ours_pytorch":
            return self.fallback(graph)
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


def kernel_in_use(models: "Models") -> str:
    """"extension" if our force call runs the compiled kernel, else "pytorch" (read from the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        models.force_call("ours")
    return "extension" if any(e.name.startswith("thermocg::") for e in prof.events()) else "pytorch"


def profile_stages(models: "Models", *, repeats: int = 11) -> dict[str, float]:
    """CPU ms per stage of our force call and training step (batch 1), each stage timed on its own."""
    import torch
    import torch.nn.functional as functional

    from thermocg.neighbors import build_graph, pair_index
    from thermocg.potentials import hipnn

    def ms(run) -> float:
        run()
        samples = []
        for _ in range(repeats):
            start = time.process_time()
            run()
            samples.append(time.process_time() - start)
        return 1e3 * statistics.median(samples)

    model = models.ours
    block = model.interactions[0]
    positions, box, pairs = models.positions[:1], models.box[:1], models.pairs[1]

    def graph():
        pos = positions.clone().requires_grad_(True)
        return pos, build_graph(pos, box, models.types, 15.0, pairs=pairs)

    pos, g = graph()
    layout = hipnn._PairLayout(g, 15.0)
    ops = model._fused_kernels(g)
    out: dict[str, float] = {}
    out["neighbour list (vesin + sort; not in the timed tasks)"] = ms(lambda: pair_index(positions, box, 15.0))
    out["pair vectors from the list (build_graph)"] = ms(graph)

    def graph_backward():
        pos_, g_ = graph()
        torch.autograd.grad(g_.pair_vec.sum(), pos_)

    out["pair vectors, forward + backward"] = ms(graph_backward)
    if ops is not None:
        vec, offsets, type_j = layout.csr(1)
        fused = hipnn._FusedLayout(ops, offsets, type_j, 1, 15.0, hipnn._sensitivity_floor(vec.dtype))
        inv_mu = block.mu.detach().reciprocal()
        sigma = block.sigma.detach()
        env = ops.hipnn_ts_env(vec.detach(), offsets, type_j, 1, inv_mu, sigma, 15.0, fused.floor)
        grad_env = torch.randn_like(env)
        up = torch.randn_like(vec)
        zeros = torch.zeros_like(inv_mu)
        out["interaction sums (fused kernel), forward"] = ms(
            lambda: ops.hipnn_ts_env(vec.detach(), offsets, type_j, 1, inv_mu, sigma, 15.0, fused.floor))
        out["interaction sums (fused kernel), backward"] = ms(
            lambda: ops.hipnn_ts_env_backward(grad_env, vec.detach(), offsets, type_j, 1, inv_mu, sigma, 15.0,
                                              fused.floor))
        out["interaction sums (fused kernel), double backward"] = ms(
            lambda: ops.hipnn_ts_env_double_backward(grad_env, vec.detach(), offsets, type_j, 1, inv_mu, sigma,
                                                     15.0, fused.floor, up, zeros, zeros, True, True))
    else:
        padded = layout.padded
        out["padded layout + tensor components"] = ms(
            lambda: hipnn._tensor_components(hipnn._PaddedPairs(g, 15.0).vec, padded.dist))
        out["sensitivities"] = ms(lambda: block.sensitivities(padded.dist, padded.mask))
        out["interaction sums (PyTorch), forward"] = ms(lambda: block.environment(None, layout, None))
    x = functional.one_hot(g.types, 1).to(g.pair_vec.dtype)
    h = block.environment(x, layout, ops).detach().requires_grad_(True)
    z = torch.randn(h.shape[0], block.n_out).requires_grad_(True)

    def dense():
        y = z
        for layer in model.atom_layers[0]:
            y = layer(y)
        return model.energy_heads[1](y).sum()

    out["dense atom layers + head, forward"] = ms(dense)
    out["dense atom layers + head, forward + backward"] = ms(lambda: torch.autograd.grad(dense(), z))
    out["force call (all of it)"] = ms(lambda: models.force_call("ours"))
    out["training step, batch 1 (all of it)"] = ms(lambda: models.train_step("ours", 1))
    return out


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


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--with-fallback", action="store_true", help="also time our PyTorch path")
    parser.add_argument("--profile", action="store_true", help="print our per-stage CPU times")
    parser.add_argument("--memory-child", nargs=2, metavar=("WHICH", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if args.memory_child:
        print(json.dumps(measure_memory(*args.memory_child, args.n_beads, thread_counts[0])))
        return

    setup(thread_counts[0])
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    load_before = load_average()
    models = Models(args.n_beads)
    kernel = kernel_in_use(models)
    print(f"{args.n_beads} beads, {models.n_pairs} ordered pairs, {models.n_params} parameters, "
          f"float32, threads {thread_counts}, torch {torch.__version__}, our kernel: {kernel}, "
          f"load average {load_before}")
    assert models.n_params == 118_954, models.n_params
    # agreement first: the same weights must give the same forces
    f_ours = models.forces_of("ours", 1, create_graph=False)
    f_hip = models.forces_of("hippynn", 1, create_graph=False)
    max_diff = float((f_ours - f_hip).abs().max())
    print(f"max |F_ours - F_hippynn| = {max_diff:.2e} kcal/mol/A (max |F| {float(f_hip.abs().max()):.3f})")
    if args.profile:
        print(f"\nour stages, CPU ms, {thread_counts[0]} thread(s), kernel {kernel}:")
        for name, value in profile_stages(models).items():
            print(f"  {name:58s} {value:8.2f}")

    which = ("ours", "ours_pytorch", "hippynn") if args.with_fallback else ("ours", "hippynn")
    result: dict[str, float | int | str | list] = {"n_beads": args.n_beads, "threads": thread_counts,
                                                    "kernel": kernel, "max_force_diff": max_diff}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        suffix = "" if threads == thread_counts[0] else f"_{threads}threads"
        times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in which for t in TASKS}
        cpu_times: dict[tuple[str, str], list[float]] = {(w, t): [] for w in which for t in TASKS}
        for task in TASKS:
            for contestant in which:
                models.task(contestant, task)()  # warm-up / compile
        for _ in tqdm(range(args.repeats), desc=f"interleaved repeats, {threads} thread(s)"):
            for task in TASKS:
                for contestant in which:
                    run = models.task(contestant, task)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run()
                    times[(contestant, task)].append(time.perf_counter() - start)
                    cpu_times[(contestant, task)].append(time.process_time() - start_cpu)
        print(f"\n{threads} thread(s)")
        print(f"{'task':10s} {'contestant':13s} {'wall s':>9s} {'cpu s':>9s} {'speedup vs hippynn':>19s} "
              f"{'(cpu)':>7s}")
        for task in TASKS:
            theirs = statistics.median(times[("hippynn", task)])
            theirs_cpu = statistics.median(cpu_times[("hippynn", task)])
            for contestant in which:
                wall = statistics.median(times[(contestant, task)])
                cpu = statistics.median(cpu_times[(contestant, task)])
                print(f"{task:10s} {contestant:13s} {wall:9.4f} {cpu:9.4f} {theirs / wall:18.2f}x "
                      f"{theirs_cpu / cpu:6.2f}x")
                if contestant == "hippynn":
                    result[f"hippynn_{task}_s{suffix}"] = round(wall, 4)
                    continue
                key = f"{contestant}_{task}_s{suffix}"
                result[key] = round(wall, 4)
                name = "speedup_vs_hippynn" if contestant == "ours" else "fallback_speedup_vs_hippynn"
                result[f"{name}_{task}{suffix}"] = round(theirs / wall, 2)
                result[f"cpu_{name}_{task}{suffix}"] = round(theirs_cpu / cpu, 2)
        result[f"speedup_vs_hippynn_force_{threads}thread{'s' if threads > 1 else ''}"] = \
            result[f"speedup_vs_hippynn_force{suffix}"]
    torch.set_num_threads(thread_counts[0])

    if not args.skip_memory:
        print(f"\n{'task':10s} {'ours MiB':>10s} {'hippynn MiB':>12s} {'ratio':>7s}   (peak RSS increase, "
              f"{thread_counts[0]} thread(s))")
        for task in TASKS:
            mem = {}
            for contestant in ("ours", "hippynn"):
                out = subprocess.run(
                    [sys.executable, __file__, "--n-beads", str(args.n_beads), "--threads", str(thread_counts[0]),
                     "--memory-child", contestant, task],
                    check=True, capture_output=True, text=True,
                    # a fixed mmap threshold: freed tensors go back to the OS, so RSS tracks live memory
                    env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
                )
                mem[contestant] = json.loads(out.stdout.strip().splitlines()[-1])
            ours, theirs = mem["ours"]["peak_increase_MiB"], mem["hippynn"]["peak_increase_MiB"]
            result[f"ours_{task}_peak_MiB"] = round(ours, 1)
            result[f"hippynn_{task}_peak_MiB"] = round(theirs, 1)
            result[f"memory_ratio_vs_hippynn_{task}"] = round(ours / theirs, 3)
            print(f"{task:10s} {ours:10.1f} {theirs:12.1f} {ours / theirs:7.3f}")
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
