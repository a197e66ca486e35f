"""A Hydra app whose ``optimizer:`` config group is an optiplug config.

    python examples/hydra/train.py                                   # conf/optimizer/adamw.yaml
    python examples/hydra/train.py optimizer=momentum base_lr=0.1     # another group member
    python examples/hydra/train.py optimizer.lr=3e-4                  # any field, validated

``optiplug.build`` takes the composed ``DictConfig`` as it is (interpolations such as
``lr: ${base_lr}`` resolved) and validates it before any tensor is touched; a bad value ends the
app with optiplug's ConfigError naming the field. Prints one JSON line: the final loss and
weights of a small least-squares fit.
"""

from __future__ import annotations

import json

import hydra
import torch
from omegaconf import DictConfig

import optiplug


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed least-squares problem: 64 points, 3 features."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    return x, x @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.25


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    model = torch.nn.Linear(3, 1).double()
    optimizer = optiplug.build(cfg.optimizer, params=model)
    x, y = data()
    for _ in range(cfg.steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        loss.backward()
        optimizer.step()
    print(json.dumps({"optimizer": type(optimizer).__name__, "loss": loss.item(),
                      "weight": model.weight.detach().flatten().tolist(),
                      "bias": model.bias.item()}))


if __name__ == "__main__":
    main()
