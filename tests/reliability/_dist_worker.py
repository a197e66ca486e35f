"""One rank of the 2-process gloo run of ``test_distributed.py`` (loopback only).

Run as ``python _dist_worker.py OUT_DIR`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` set, the way ``torchrun`` sets them. Trains the same model on the same global
batches twice: wrapped in ``DistributedDataParallel`` with an optiplug optimizer and scheduler,
then with ``ZeroRedundancyOptimizer`` over the optiplug optimizer class, and writes what rank 0
ends with (and a mid-run state to resume from) into ``OUT_DIR``.

The test module imports the model, data and settings from here, so the single-process
reference is built from the very same definitions.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

STEPS = 10
RESUME_AT = 5
GLOBAL_BATCH = 8
OPTIMIZER = "adamw"
HYPER: dict[str, Any] = {"lr": 0.05, "betas": (0.9, 0.99), "weight_decay": 0.01}
# ZeRO builds the class over model.parameters() (unnamed: every parameter decays, one group);
# the runs built from the model say so too (by default its biases would get no decay).
DECAY_ALL: dict[str, Any] = {"decay_bias_and_norm": True}
SCHEDULER = "cosine"
SCHEDULE: dict[str, Any] = {"T_max": STEPS, "eta_min": 0.001, "warmup_steps": 2}


def make_model() -> torch.nn.Module:
    """The model, initialized the same way in every process."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model = model.to(torch.float64)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * 0.5)
    return model


def global_batches(steps: int = STEPS) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The global batches, the same in every process."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(GLOBAL_BATCH, 5, generator=generator, dtype=torch.float64)
        y = torch.randn(GLOBAL_BATCH, 2, generator=generator, dtype=torch.float64)
        yield x, y


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error: with equal shards, DDP's mean of the gradients is the global one."""
    return torch.nn.functional.mse_loss(model(x), y)


def optiplug_class() -> type[torch.optim.Optimizer]:
    """The torch optimizer class the optiplug torch backend builds for :data:`OPTIMIZER`."""
    import optiplug

    probe = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    return type(optiplug.optimizer(OPTIMIZER, [probe], **HYPER))


def _shard(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    size = tensor.shape[0] // world
    return tensor[rank * size:(rank + 1) * size]


def _train_ddp(out: Path, rank: int, world: int) -> None:
    from torch.nn.parallel import DistributedDataParallel

    import optiplug

    model = make_model()
    ddp = DistributedDataParallel(model)
    optimizer = optiplug.optimizer(OPTIMIZER, model, **HYPER, **DECAY_ALL)
    scheduler = optiplug.scheduler(SCHEDULER, optimizer, **SCHEDULE)
    for step, (x, y) in enumerate(global_batches()):
        if step == RESUME_AT and rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict()}, out / "resume.pt")
        optimizer.zero_grad()
        loss_of(ddp, _shard(x, rank, world), _shard(y, rank, world)).backward()
        optimizer.step()
        scheduler.step()
    if rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                   out / "ddp.pt")


def _train_zero(out: Path, rank: int, world: int) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    import optiplug

    model = make_model()
    ddp = DistributedDataParallel(model)
    optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optiplug_class(),
                                        **HYPER)
    scheduler = optiplug.scheduler(SCHEDULER, optimizer, **SCHEDULE)
    for x, y in global_batches():
        optimizer.zero_grad()
        loss_of(ddp, _shard(x, rank, world), _shard(y, rank, world)).backward()
        optimizer.step()
        scheduler.step()
    optimizer.consolidate_state_dict(to=0)
    if rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "local_class": type(optimizer.optim).__name__}, out / "zero.pt")


def main(out: Path) -> None:
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        _train_ddp(out, rank, world)
        _train_zero(out, rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.done").write_text("ok", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
