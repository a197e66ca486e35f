"""Training on several processes with torch.distributed: 2 ranks, gloo, loopback only.

The run (``_dist_worker.py``, started as two subprocesses on a free 127.0.0.1 port, the way
``torchrun`` starts ranks) takes well under a minute and is killed after
:data:`RUN_TIMEOUT` seconds, so nothing can hang. Checked against a single process training on
the same global batches, in float64 to 1e-10:

- ``DistributedDataParallel`` with an optiplug optimizer and scheduler;
- ``ZeroRedundancyOptimizer`` over the optiplug torch optimizer class;
- optimizer and scheduler state saved by a distributed run resume in a single process
  (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import optiplug  # noqa: E402

from . import _dist_worker as worker  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

RUN_TIMEOUT = 55
TOLERANCE = 1e-10


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the two ranks once for the whole module; returns the folder with their results."""
    out = tmp_path_factory.mktemp("distributed")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
                       OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):
        environment["GLOO_SOCKET_IFNAME"] = "lo"  # never leave the machine
    ranks = []
    for rank in range(2):
        ranks.append(subprocess.Popen(
            [sys.executable, str(Path(worker.__file__)), str(out)],
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in ranks:
            output, _ = process.communicate(timeout=RUN_TIMEOUT)
            outputs.append(output)
    except subprocess.TimeoutExpired:
        for process in ranks:
            process.kill()
        pytest.fail(f"the distributed run did not finish in {RUN_TIMEOUT} s")
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, (process, output) in enumerate(zip(ranks, outputs, strict=True)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output[-4000:]}"
    return out


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _single_process(steps: int, start: dict[str, Any] | None = None,
                    first: int = 0) -> tuple[torch.nn.Module, Any, Any]:
    """Train in this process on the full global batches ``first .. steps - 1``."""
    model = worker.make_model()
    optimizer = optiplug.optimizer(worker.OPTIMIZER, model, **worker.HYPER, **worker.DECAY_ALL)
    scheduler = optiplug.scheduler(worker.SCHEDULER, optimizer, **worker.SCHEDULE)
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        if "scheduler" in start:
            scheduler.load_state_dict(start["scheduler"])
    for step, (x, y) in enumerate(worker.global_batches(steps)):
        if step < first:
            continue
        optimizer.zero_grad()
        worker.loss_of(model, x, y).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _assert_params_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.float64
        difference = (got[name] - want[name]).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: differs by {difference:.3e}"


@pytest.fixture(scope="module")
def reference() -> Iterator[dict[str, torch.Tensor]]:
    model, _, _ = _single_process(worker.STEPS)
    yield {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_ddp_with_optiplug_optimizer_and_scheduler_matches_one_process(
        run: Path, reference: dict[str, torch.Tensor]) -> None:
    result = _load(run / "ddp.pt")
    _assert_params_close(result["model"], reference)
    # The run really moved: the final parameters are far from the initial ones.
    initial = worker.make_model().state_dict()
    assert max((reference[n] - initial[n]).abs().max().item() for n in initial) > 1e-2


def test_zero_redundancy_optimizer_runs_the_optiplug_optimizer_class(
        run: Path, reference: dict[str, torch.Tensor]) -> None:
    result = _load(run / "zero.pt")
    assert result["local_class"] == worker.optiplug_class().__name__
    assert issubclass(worker.optiplug_class(), torch.optim.Optimizer)
    _assert_params_close(result["model"], reference)


def test_state_saved_by_a_distributed_run_resumes_in_one_process(
        run: Path, reference: dict[str, torch.Tensor]) -> None:
    saved = _load(run / "resume.pt")
    model, _, scheduler = _single_process(worker.STEPS, start=saved,
                                          first=worker.RESUME_AT)
    _assert_params_close(dict(model.state_dict()), reference)
    assert scheduler.last_epoch == worker.STEPS


def test_zero_consolidated_state_resumes_in_one_process(run: Path) -> None:
    """ZeRO's consolidated state loads into the plain optiplug optimizer and steps on exactly."""
    saved = _load(run / "zero.pt")
    steps = worker.STEPS + 2
    resumed, _, scheduler = _single_process(steps, start=saved, first=worker.STEPS)
    expected, _, expected_scheduler = _single_process(steps)
    _assert_params_close(dict(resumed.state_dict()), dict(expected.state_dict()))
    assert scheduler.last_epoch == expected_scheduler.last_epoch == steps
