"""Data-parallel force matching on several processes, with PyTorch's own ``torch.distributed``.

Launch ``thermocg train`` with ``torchrun``; each process is one rank::

    torchrun --standalone --nproc-per-node 4 -m thermocg train study.yaml          # one machine
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m thermocg train study.yaml                                               # two machines

(the run directory must then be on a file system every machine sees). The backend is gloo on CPUs
and nccl when ``train.device`` is ``cuda`` (rank r of a machine uses ``cuda:LOCAL_RANK``).
``train.n_threads`` is per process. In Python, :func:`process_group_from_environment` starts the
group from torchrun's variables and gives the :class:`DataParallel` that
:class:`~thermocg.train.Trainer` takes as ``parallel=``.

What makes N processes give the weights of one process training on the same batches:

- every rank reads the same datasets and prepares the same split, builds the same model and draws
  the same batch order from the same seed; :meth:`DataParallel.check_same` refuses to start when the
  fingerprints (data hashes, resolved config, model description, seed) differ between ranks, and the
  weights of rank 0 are broadcast before the first step;
- each batch (frames of one state point) is cut into disjoint shards: rank r takes frames r, r + N,
  r + 2N, ... of it (a rank may get none when the batch is smaller than N);
- the loss of the whole batch is put together exactly from per-shard sums. With d = (F - F_ref) / s
  over the n force components of the batch, S_r = sum of d^2 and A_r = sum of |d| over rank r's
  components, S = sum_r S_r, A = sum_r A_r (an all-reduce of three numbers):

      rmse = sqrt(S / n),   mae = A / n,   mse = S / n,
      d rmse = sum_r dS_r / (2 n rmse),   d mae = sum_r dA_r / n,

  so each rank back-propagates  c_S S_r + c_A A_r  with the constants c_S, c_A of the global loss
  (:func:`loss_from_sums`) and the gradients are summed over ranks (one all-reduce of all of them):
  the gradient of the whole batch's loss, not an average of shard losses (which differs for the
  RMSE). Every rank then holds the same gradient and takes the same Adam step;
- validation: each rank evaluates a disjoint share of the validation frames; the sums of squared
  and absolute errors and the counts are all-reduced, so the validation loss, RMSE and MAE are those
  of all frames, and every rank's plateau schedule takes the same decisions;
- rank 0 alone writes (resolved.yaml, checkpoint.pt, metrics.csv, the model file, the test metrics
  and figures; the test set is evaluated once, on rank 0) and holds the run directory's lock; the
  others wait for it at the end. A resumed run reads rank 0's checkpoint on every rank.

Results agree with one process to float round-off (sums in another order): see
tests/test_train_distributed.py for the measured agreement.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from thermocg.potentials.base import energy_and_forces
from thermocg.train.data import StateData, TrainError
from thermocg.train.thermal import state_temperature

if TYPE_CHECKING:  # pragma: no cover
    from thermocg.config import TrainConfig
    from thermocg.potentials.base import Potential
    from thermocg.train.trainer import Trainer

__all__ = ["DataParallel", "process_group_from_environment", "loss_from_sums", "launched_by_torchrun"]


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def loss_from_sums(kind: str, sum_sq: float, sum_abs: float, n: float) -> tuple[float, float, float]:
    """The loss of a batch from the sums over its n components of d^2 and |d| (d in force-scale
    units), and its derivatives (c_S, c_A) with respect to those two sums.

    The same loss as :func:`thermocg.train.force_loss` ("rmse+mae", "rmse", "mae", "mse"); with no
    components the loss is 0 (NaN is left to the caller's divergence check)."""
    if kind not in ("rmse+mae", "rmse", "mae", "mse"):
        raise TrainError(f"train.loss: unknown loss {kind!r}; use rmse+mae, rmse, mae or mse")
    if n <= 0:
        return 0.0, 0.0, 0.0
    loss, c_sq, c_abs = 0.0, 0.0, 0.0
    if kind in ("rmse", "rmse+mae"):
        rmse = math.sqrt(sum_sq / n)
        loss += rmse
        c_sq += 1.0 / (2.0 * n * rmse) if rmse > 0 else 0.0
    if kind in ("mae", "rmse+mae"):
        loss += sum_abs / n
        c_abs += 1.0 / n
    if kind == "mse":
        loss, c_sq = sum_sq / n, 1.0 / n
    return loss, c_sq, c_abs


class DataParallel:
    """This process's place in a data-parallel fit (module docstring): its rank among ``world_size``
    ranks of the default process group, and the collective operations the :class:`Trainer` needs.

    The process group must be initialised (:func:`process_group_from_environment`, or
    ``torch.distributed.init_process_group``). ``device``: where this rank trains (for nccl, its
    GPU); None: the trainer's ``train.device``.
    """

    def __init__(self, *, device: str | torch.device | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise TrainError("data-parallel training needs an initialised torch.distributed process group "
                             "(launch with torchrun, or call torch.distributed.init_process_group)")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.backend = str(dist.get_backend())
        self.device = None if device is None else torch.device(device)

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes every file of the run."""
        return self.rank == 0

    def training_device(self, configured: str) -> torch.device:
        return self.device if self.device is not None else torch.device(configured)

    def _buffer(self, values: Sequence[float] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """A float64 tensor where the backend can reduce it (nccl: the GPU)."""
        where = device if self.backend == "nccl" else torch.device("cpu")
        return torch.as_tensor(values, dtype=torch.float64).to(where)

    # ---- collectives
    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's frames of a batch: entries rank, rank + N, ... of ``indices``."""
        return np.asarray(indices)[self.rank::self.world_size]

    def all_reduce_sum(self, values: Sequence[float], device: torch.device | None = None) -> list[float]:
        buffer = self._buffer(values, device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.cpu().tolist()

    def broadcast_values(self, values: Sequence[float], device: torch.device | None = None) -> list[float]:
        """Rank 0's ``values`` on every rank (bit-identical numbers for identical decisions)."""
        buffer = self._buffer(values, device)
        dist.broadcast(buffer, src=0)
        return buffer.cpu().tolist()

    def check_same(self, value: str, what: str) -> None:
        """Raise :class:`TrainError` on every rank unless every rank holds the same ``value``."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        differ = [r for r, v in enumerate(gathered) if v != gathered[0]]
        if differ:
            raise TrainError(f"data-parallel training: {what} of rank(s) {differ} differ from rank 0's; every "
                             "process must read the same run directory and config")

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        for tensor in module.state_dict().values():
            dist.broadcast(tensor.data, src=0)

    def reduce_gradients(self, module: torch.nn.Module) -> None:
        """Sum every parameter's gradient over the ranks (one all-reduce). A parameter without a
        gradient on every rank keeps none (an optimiser then skips it, as with one process)."""
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        device = params[0].device
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64) for p in params]
        flags = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64, device=device)
        flat = torch.cat(parts + [flags])
        if self.backend != "nccl":
            flat = flat.cpu()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        used = flat[-len(params):]
        offset = 0
        for k, p in enumerate(params):
            size = p.numel()
            p.grad = flat[offset:offset + size].view_as(p).to(device=p.device, dtype=p.dtype) if used[k] > 0 else None
            offset += size

    def barrier(self) -> None:
        dist.barrier()

    # ---- the trainer's two hooks
    def train_step(self, trainer: "Trainer", state: StateData, batch: np.ndarray) -> float:
        """One optimiser step on ``batch`` (frame indices of ``state``) split over the ranks; returns
        the loss of the whole batch (module docstring)."""
        potential, resolved, device = trainer.potential, trainer.resolved, trainer.device
        dtype = potential.dtype
        mine = self.shard(batch)
        trainer.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(3, dtype=dtype, device=device)
        if len(mine):
            positions = torch.as_tensor(state.positions[mine], dtype=dtype, device=device)
            box = torch.as_tensor(state.box[mine], dtype=dtype, device=device)
            reference = torch.as_tensor(state.forces[mine], dtype=dtype, device=device)
            with state_temperature(potential, state):
                _, forces = energy_and_forces(potential, positions, box, state.types, create_graph=True)
            d = (forces - reference) / resolved.force_scale_kcal_mol_A
            sums = torch.stack([d.pow(2).sum(), d.abs().sum(), torch.tensor(float(d.numel()), dtype=dtype,
                                                                            device=device)])
        total_sq, total_abs, n = self.all_reduce_sum(sums.detach().double().tolist(), device)
        loss, c_sq, c_abs = loss_from_sums(resolved.loss, total_sq, total_abs, n)
        if len(mine):
            (c_sq * sums[0] + c_abs * sums[1]).backward()
        self.reduce_gradients(potential)
        trainer.optimizer.step()
        return loss

    def validation_loss(self, potential: "Potential", states: Sequence[StateData], config: "TrainConfig",
                        device: torch.device | None = None) -> tuple[float, float, float]:
        """(loss, force RMSE, force MAE) over every state's validation frames, each rank evaluating
        its share; the same numbers on every rank."""
        from thermocg.train.trainer import predict_forces

        sum_sq = sum_abs = n = 0.0
        for s in states:
            mine = self.shard(s.val)
            if len(mine):
                with state_temperature(potential, s):
                    predicted = predict_forces(potential, s.positions[mine], s.box[mine], s.types,
                                               batch_size=config.eval_batch_size)
                error = predicted - s.forces[mine]
                sum_sq += float(np.sum(error * error))
                sum_abs += float(np.sum(np.abs(error)))
                n += error.size
        sum_sq, sum_abs, n = self.all_reduce_sum([sum_sq, sum_abs, n], device)
        scale = config.force_scale_kcal_mol_A
        loss = loss_from_sums(config.loss, sum_sq / scale**2, sum_abs / scale, n)[0]
        rmse, mae = (math.sqrt(sum_sq / n), sum_abs / n) if n else (math.nan, math.nan)
        return tuple(self.broadcast_values([loss, rmse, mae], device))  # type: ignore[return-value]


@contextlib.contextmanager
def process_group_from_environment(configured_device: str = "cpu") -> Iterator[DataParallel | None]:
    """Under torchrun (``WORLD_SIZE`` > 1): start the default process group from its environment
    variables (gloo; nccl when ``configured_device`` is a CUDA device) and yield this rank's
    :class:`DataParallel`, destroying the group afterwards. Otherwise yield None (one process).
    A group already initialised is used as it is and left alone."""
    if not launched_by_torchrun():
        yield None
        return
    device = None
    if str(configured_device).startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device is not None else "gloo", init_method="env://")
        created = True
    try:
        yield DataParallel(device=device)
        if created:
            # every rank done before the group goes away: gloo aborts a rank (std::terminate) whose peer
            # tears the group down while its own last exchange is still in flight
            dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
