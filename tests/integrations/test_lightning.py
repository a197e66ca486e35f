"""Lightning's own Trainer drives an optiplug optimizer and scheduler built from one config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

import lightning as L  # noqa: E402

import optiplug  # noqa: E402
from optiplug.integrations.lightning import configure_optimizers  # noqa: E402

from .reference import no_decay_groups  # noqa: E402

CONFIG = """\
optimizer: {name: adamw, lr: 1e-2, weight_decay: 0.1}
scheduler: {name: cosine, T_max: 4, eta_min: 1e-3}
"""


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=generator, dtype=torch.float64)
    y = x @ torch.linspace(-1, 1, 5, dtype=torch.float64) + 0.1
    return x, y


def _net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).double()


class Regressor(L.LightningModule):
    def __init__(self, config: object) -> None:
        super().__init__()
        self.net = _net()
        self.config = config
        self.lrs: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def configure_optimizers(self) -> dict[str, object]:
        return configure_optimizers(self.config, self)


def _fit(module: Regressor, epochs: int) -> None:
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, loader)


def _reference(epochs: int) -> tuple[torch.nn.Module, list[float]]:
    """The same training written by hand with torch.optim.AdamW and CosineAnnealingLR."""
    net = _net()
    optimizer = torch.optim.AdamW(no_decay_groups(net), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-3)
    x, y = _data()
    lrs = []
    for _ in range(epochs):
        for start in range(0, 32, 8):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x[start:start + 8]).squeeze(-1),
                                                y[start:start + 8])
            loss.backward()
            optimizer.step()
        scheduler.step()
    return net, lrs


def test_lightning_trains_with_the_config_exactly_as_a_hand_written_torch_loop(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    module = Regressor(path)
    _fit(module, epochs=3)
    reference, lrs = _reference(epochs=3)
    assert module.lrs == pytest.approx(lrs, rel=1e-15)
    for ours, theirs in zip(module.net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_configure_optimizers_returns_lightnings_dict_with_the_declared_interval():
    net = _net()
    returned = configure_optimizers({"optimizer": {"name": "adamw", "lr": 1e-2},
                                     "scheduler": {"name": "cosine", "T_max": 4}}, net)
    assert isinstance(returned["optimizer"], torch.optim.AdamW)
    scheduler = returned["lr_scheduler"]
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.LRScheduler)
    assert scheduler["interval"] == "epoch"
    assert scheduler["frequency"] == 1
    assert configure_optimizers({"name": "sgd", "lr": 0.1}, net).keys() == {"optimizer"}


def test_plateau_scheduler_gets_the_metric_to_monitor():
    returned = configure_optimizers({"optimizer": {"name": "adam"},
                                     "scheduler": {"name": "reduce_on_plateau", "patience": 0}},
                                    _net(), monitor="val_mse")
    assert returned["lr_scheduler"]["monitor"] == "val_mse"


def test_plateau_scheduler_in_lightning_reduces_on_the_logged_metric():
    class Plateau(Regressor):
        def training_step(self, batch, index):  # type: ignore[no-untyped-def]
            loss = super().training_step(batch, index)
            self.log("val_mse", 1.0)  # best after epoch 1, then never improves
            return loss

        def configure_optimizers(self) -> dict[str, object]:
            return configure_optimizers(self.config, self, monitor="val_mse")

    module = Plateau({"optimizer": {"name": "sgd", "lr": 0.1},
                      "scheduler": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5}})
    _fit(module, epochs=3)
    per_epoch = module.lrs[::4]
    # torch's ReduceLROnPlateau: epoch 1 sets the best value; each later epoch is a bad one.
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05], rel=1e-15)
    assert math.isclose(module.trainer.optimizers[0].param_groups[0]["lr"], 0.025)


def test_invalid_config_is_one_config_error_before_anything_is_built():
    with pytest.raises(optiplug.ConfigError) as caught:
        configure_optimizers({"optimizer": {"name": "adamw", "lr": -1.0},
                              "scheduler": {"name": "cosine", "T_max": 0}}, _net())
    message = str(caught.value)
    assert "optimizer.lr" in message and "scheduler.T_max" in message
