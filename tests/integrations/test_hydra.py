"""The Hydra example app: its optimizer group is an optiplug config, overrides included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra")
torch = pytest.importorskip("torch")

from .reference import no_decay_groups  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "examples" / "hydra" / "train.py"


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(APP), f"hydra.run.dir={tmp_path}",
                           "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                           *overrides], capture_output=True, text=True, env=env, timeout=120)


def _reference(make_optimizer, steps: int = 25) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The app's training written with torch.optim directly."""
    sys.path.insert(0, str(APP.parent))
    try:
        from train import data
    finally:
        sys.path.remove(str(APP.parent))
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    optimizer = make_optimizer(model)
    x, y = data()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        loss.backward()
        optimizer.step()
    return {"weight": model.weight.detach().flatten().tolist(), "bias": model.bias.item()}


def _output(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_group_resolves_the_interpolated_lr_and_yaml_numbers(tmp_path: Path):
    result = _output(_run(tmp_path))
    # Built from a model, the bias gets no weight decay (optiplug's default, as timm's).
    expected = _reference(lambda m: torch.optim.AdamW(no_decay_groups(m), lr=0.05,
                                                      weight_decay=1e-2))
    assert result["optimizer"] == "AdamW"
    assert result["weight"] == pytest.approx(expected["weight"], rel=1e-12)
    assert result["bias"] == pytest.approx(expected["bias"], rel=1e-12)


def test_choosing_another_group_member_and_overriding_a_field(tmp_path: Path):
    result = _output(_run(tmp_path, "optimizer=momentum", "base_lr=0.1", "optimizer.momentum=0.5"))
    expected = _reference(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5))
    assert result["weight"] == pytest.approx(expected["weight"], rel=1e-12)


def test_an_invalid_override_fails_with_the_field_named(tmp_path: Path):
    done = _run(tmp_path, "optimizer.lr=-1")
    assert done.returncode != 0
    assert "lr" in done.stderr and "greater than 0" in done.stderr
