"""Benchmark: MS-CG fitting of 1,000-bead frames (issue 5), time and peak memory vs number of frames.

Data: synthetic LJ-like CG frames, 1,000 beads at 0.0128 beads/A^3 (a 10^3 lattice with Gaussian
jitter) with the exact forces of a Lennard-Jones fluid (sigma 3.5 A, epsilon 0.25 kcal/mol), cutoff
15 A, spline spacing 0.1 A (140 coefficients). ``--unique-frames`` distinct configurations are
generated and cycled, because generating exact forces costs more than fitting them; the fit does the
same work per frame whether or not a configuration repeats.

Ours: :class:`thermocg.mscg.NormalEquations`, frame by frame (memory independent of the frame count).
Peer, measured in the same run: the textbook dense least squares, ``numpy.linalg.lstsq`` on the full
stacked design matrix (3 N n_frames x n_coefficients), which needs memory proportional to the frame
count; it runs at ``--dense-frames`` (its memory at 1,000 frames would be 3.4 GB). Both use the same
design-matrix assembly, so the ratio measures the solver strategy. Both solve the same unregularised
problem and their coefficients are compared.

Prints a table and ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402


def make_frames(n_beads: int, density: float, n_unique: int, cutoff_A: float, seed: int):
    import torch

    from thermocg.frames import Frames
    from thermocg.potentials.base import energy_and_forces
    from thermocg.potentials.lj import LennardJones

    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    side = round(n_beads ** (1 / 3))
    if side**3 != n_beads:
        raise SystemExit(f"--n-beads must be a cube, got {n_beads}")
    length = (n_beads / density) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lj = LennardJones(["CG"], epsilon_kcal_mol=0.25, sigma_A=3.5, cutoff_A=cutoff_A, switch_width_A=2.0)
    box = np.eye(3) * length
    types = np.zeros(n_beads, dtype=np.int64)
    frames = []
    for _ in range(n_unique):
        positions = (grid + 0.5) * (length / side) + rng.normal(0.0, 0.35, (n_beads, 3))
        _, forces = energy_and_forces(lj, positions, box, types)
        single = Frames(positions=positions, box=box, types=types, type_names=("CG",),
                        masses=np.full(n_beads, 32.0), forces=forces.numpy())
        frames.append((positions, forces[0].numpy(), single))
    return frames, box, types


def fit_streaming(frames, box, types, n_frames: int, args, *, ridge: float, smoothness: float):
    from thermocg.mscg import NormalEquations

    eq = NormalEquations(["CG"], cutoff_A=args.cutoff, r_min_A=1.0, spacing_A=args.spacing)
    for k in range(n_frames):
        eq.add(frames[k % len(frames)][2])  # the public streaming path, one frame at a time
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = eq.solve(ridge=ridge, smoothness=smoothness)
    return table.coefficients[0, 0].numpy()


def fit_dense(frames, box, types, n_frames: int, args):
    from thermocg.mscg import NormalEquations

    eq = NormalEquations(["CG"], cutoff_A=args.cutoff, r_min_A=1.0, spacing_A=args.spacing)
    rows, targets = [], []
    for k in range(n_frames):
        positions, forces, _ = frames[k % len(frames)]
        rows.append(eq.design_matrix(positions, box, types))
        targets.append(forces.reshape(-1))
    design = np.concatenate(rows)
    del rows
    active = np.abs(design).sum(axis=0) > 0
    coef = np.zeros(eq.n_params)
    coef[active] = np.linalg.lstsq(design[:, active], np.concatenate(targets), rcond=None)[0]
    return coef


def timed(fn, *a, memory: bool = False, **k):
    """(result, wall seconds, CPU seconds of this process, peak traced MiB or None)."""
    if memory:
        tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = None
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out, elapsed, cpu, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--density", type=float, default=0.0128, help="beads/A^3")
    parser.add_argument("--cutoff", type=float, default=15.0)
    parser.add_argument("--spacing", type=float, default=0.1)
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[10, 100],
                        help="frame counts at which peak memory is traced (tracemalloc)")
    parser.add_argument("--dense-frames", type=int, default=10)
    parser.add_argument("--unique-frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(2)
    except ImportError:
        pass

    t0 = time.perf_counter()
    frames, box, types = make_frames(args.n_beads, args.density, args.unique_frames, args.cutoff, args.seed)
    print(f"generated {args.unique_frames} LJ frames of {args.n_beads} beads in {time.perf_counter() - t0:.1f} s "
          f"(box {box[0, 0]:.2f} A, cycled)")

    fit_streaming(frames, box, types, 1, args, ridge=1e-10, smoothness=1e-7)  # warm-up: imports, caches
    # the CPU time of this process is the robust measure on a shared machine; wall time is printed too
    results = {}
    for n in sorted(set(args.frames)):
        _, wall, cpu, _ = timed(fit_streaming, frames, box, types, n, args, ridge=1e-10, smoothness=1e-7)
        results[n] = {"wall_s": wall, "cpu_s": cpu}
        print(f"ours    {n:5d} frames: {cpu:8.2f} s CPU ({1e3 * cpu / n:.1f} ms/frame), {wall:8.2f} s wall")
    memory = {}
    for n in sorted(set(args.memory_frames)):
        _, _, _, peak = timed(fit_streaming, frames, box, types, n, args, ridge=1e-10, smoothness=1e-7, memory=True)
        memory[n] = peak
        print(f"ours    {n:5d} frames: peak traced memory {peak:8.1f} MiB")

    n_dense = args.dense_frames
    ours_coef, t_ours, c_ours, _ = timed(fit_streaming, frames, box, types, n_dense, args, ridge=0.0, smoothness=0.0)
    dense_coef, t_dense, c_dense, _ = timed(fit_dense, frames, box, types, n_dense, args)
    _, _, _, peak_dense = timed(fit_dense, frames, box, types, n_dense, args, memory=True)
    _, _, _, peak_ours = timed(fit_streaming, frames, box, types, n_dense, args, ridge=0.0, smoothness=0.0,
                               memory=True)
    scale = np.abs(dense_coef).max()
    agreement = float(np.abs(ours_coef - dense_coef).max() / scale)
    speedup = c_dense / c_ours
    per_frame_dense = max(peak_dense - peak_ours, 0.0) / n_dense
    print(f"peer (dense lstsq) {n_dense} frames: {c_dense:.2f} s CPU ({t_dense:.2f} s wall), peak {peak_dense:.1f} MiB "
          f"(+{per_frame_dense:.1f} MiB per frame over ours -> ~{per_frame_dense * 1000 / 1024:.1f} GiB more at "
          f"1000 frames); ours {c_ours:.2f} s CPU ({t_ours:.2f} s wall), peak {peak_ours:.1f} MiB")
    print(f"coefficients: max |ours - dense| / max |dense| = {agreement:.2e}")
    print(f"speedup_vs_dense_lstsq = {speedup:.2f} (CPU time; wall ratio {t_dense / t_ours:.2f}) at {n_dense} frames")
    summary = {
        "bench": "mscg",
        "n_beads": args.n_beads,
        "density_per_A3": args.density,
        "cutoff_A": args.cutoff,
        "spacing_A": args.spacing,
        "unique_frames_cycled": args.unique_frames,
        "cpu_s_by_frames": {str(n): round(v["cpu_s"], 3) for n, v in results.items()},
        "wall_s_by_frames": {str(n): round(v["wall_s"], 3) for n, v in results.items()},
        "peak_mem_MiB_by_frames": {str(n): round(v, 2) for n, v in memory.items()},
        "dense_frames": n_dense,
        "dense_cpu_s": round(c_dense, 3),
        "dense_peak_mem_MiB": round(peak_dense, 2),
        "ours_cpu_s_at_dense_frames": round(c_ours, 3),
        "ours_peak_mem_MiB_at_dense_frames": round(peak_ours, 2),
        "coefficient_agreement_rel": agreement,
        "speedup_vs_dense_lstsq": round(speedup, 3),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
