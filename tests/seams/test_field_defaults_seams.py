"""The field's defaults from a recipe file through the CLI: ``layer_decay``, gradient clipping
and the default no-decay of biases and normalization weights, in ``optiplug validate
--param-groups`` (the dry-run table) and in what ``optiplug run`` trains on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from optiplug.cli import main
from optiplug.training.checkpoint import load_numpy_checkpoint, load_torch_checkpoint

LR, LAYER_DECAY, CLIP = 0.1, 0.5, 1e-6
RECIPE = {
    "name": "defaults",
    "data": {"dataset": "moons", "samples": 200, "validation_split": 0.25, "seed": 1},
    "model": {"layers": [
        {"units": 8, "initializer": {"name": "xavier_uniform"}, "activation": {"name": "tanh"},
         "normalizer": {"name": "layer_norm"}},
        {"units": 8, "initializer": {"name": "xavier_uniform"}, "activation": {"name": "tanh"}},
    ]},
    # SGD without momentum: with every gradient element clipped to +-CLIP, a parameter moves
    # by exactly its lr * CLIP per step, up or down.
    "optimizer": {"name": "sgd", "lr": LR, "weight_decay": 0.01, "layer_decay": LAYER_DECAY,
                  "clip_grad_value": CLIP},
    "train": {"epochs": 1, "batch_size": 50, "seed": 0, "backend": "numpy",
              "dtype": "float64"},
}
SHAPES = {"layers.0.linear.weight": [8, 2], "layers.0.linear.bias": [8],
          "layers.0.norm.weight": [8], "layers.0.norm.bias": [8],
          "layers.1.linear.weight": [8, 8], "layers.1.linear.bias": [8],
          "output.weight": [2, 8], "output.bias": [2]}
# By hand: layers.0 is layer 0, layers.1 layer 1, output layer 2 (the top, at the full lr).
EXPECTED_LR = {name: LR * LAYER_DECAY ** (2 - (0 if name.startswith("layers.0") else
                                               1 if name.startswith("layers.1") else 2))
               for name in SHAPES}
NO_DECAY = {name for name in SHAPES if name.endswith(".bias") or ".norm." in name}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipe")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    (folder / "shapes.yaml").write_text(yaml.safe_dump(SHAPES), encoding="utf-8")
    return path


def test_validate_shows_layer_scales_and_default_no_decay_in_the_dry_run_table(
        recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(recipe), "--param-groups",
                 str(recipe.parent / "shapes.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["parameter", "shape", "roles", "group", "layer", "lr",
                                "lr_scale", "weight_decay", "rules"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == set(SHAPES)
    for name, row in rows.items():
        assert float(row[5]) == pytest.approx(EXPECTED_LR[name], rel=1e-12), name
        assert float(row[6]) == pytest.approx(EXPECTED_LR[name] / LR, rel=1e-12), name
        assert float(row[7]) == (0.0 if name in NO_DECAY else 0.01), name
        assert row[8] == ("no_decay" if name in NO_DECAY else "-"), name


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_run_trains_with_the_layer_lrs_no_decay_and_clipping(recipe: Path, tmp_path: Path,
                                                             backend: str) -> None:
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--backend", backend, "--out", str(out), "--quiet"]) == 0
    load = load_numpy_checkpoint if backend == "numpy" else load_torch_checkpoint
    checkpoint = load(next((out / "checkpoints").iterdir()))
    # The optimizer the run built: every parameter's lr and weight decay as in the table.
    for group in checkpoint["optimizer"]["param_groups"]:
        for name in group["param_names"]:
            assert group["lr"] == pytest.approx(EXPECTED_LR[name], rel=1e-12), name
            assert group["weight_decay"] == (0.0 if name in NO_DECAY else 0.01), name
    # The layer-norm scale starts at 1 and gets no decay: clipped to +-CLIP, it moved by an odd
    # number (1 or 3 steps' worth) of its layer's lr * CLIP, exactly. Decayed, it would have
    # shrunk by lr * 0.01 per step; unclipped, moved by lr * |grad|.
    weight = np.asarray(checkpoint["model"]["layers.0.norm.weight"], dtype=np.float64)
    steps = (weight - 1.0) / (EXPECTED_LR["layers.0.norm.weight"] * CLIP)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    assert set(np.abs(np.round(steps)).astype(int)) <= {1, 3}
