"""Scheduler checks: state dicts round-trip and continue."""

from __future__ import annotations

import pickle

from ..specs import Spec
from ..technique import Technique
from ._common import STEPS, _build, _fail, _lrs, _need, _scheduler_optimizer, _step_scheduler
from ._examples import (
    ConformanceError,
    example_spec,
)


# --------------------------------------------------------------------------- schedulers
def _scheduler_run(technique: Technique, spec: Spec, backend: str, steps: int,
                   resume_at: int | None = None) -> list[list[float]]:
    optimizer = _scheduler_optimizer(backend)
    scheduler = _build(technique, spec, backend, optimizer=optimizer)
    lrs = []
    for step in range(steps):
        if step == resume_at:
            saved = pickle.loads(pickle.dumps((optimizer.state_dict(),
                                               scheduler.state_dict())))
            optimizer = _scheduler_optimizer(backend)
            scheduler = _build(technique, spec, backend, optimizer=optimizer)
            optimizer.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        optimizer.step()
        _step_scheduler(scheduler, step)
        lrs.append(_lrs(optimizer))
    return lrs


def check_scheduler_state_dict(technique: Technique, backend: str) -> None:
    """A scheduler's ``state_dict()`` (with its optimizer's) pickles and loads into a new pair
    that continues with exactly the learning rates of the uninterrupted run."""
    _need(technique, backend)
    clause = f"state_dict[{backend}]"
    spec = example_spec(technique.spec)
    straight = _scheduler_run(technique, spec, backend, STEPS)
    try:
        resumed = _scheduler_run(technique, spec, backend, STEPS, resume_at=7)
    except ConformanceError:  # a builder failure, already explained
        raise
    except Exception as exc:
        raise _fail(technique, clause, f"saving and loading after 7 steps raised "
                                       f"{type(exc).__name__}: {exc}") from None
    if straight != resumed:
        step = next(i for i, (a, b) in enumerate(zip(straight, resumed, strict=True)) if a != b)
        raise _fail(technique, clause, (
            f"after loading the state at step 7, step {step} gives lr {resumed[step]}, the "
            f"uninterrupted run {straight[step]}"))


