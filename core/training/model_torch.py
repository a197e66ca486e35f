"""The recipe's MLP on PyTorch: ``nn.Module``s and a torch optimizer from the registry.

Imported only when a recipe's backend is ``torch``. Parameter names match the NumPy model's.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ..api import Initializer
from ..config import build
from ..errors import ConfigError, ConfigIssue
from ..registry import default_registry
from .diagnostics import LayerStats
from .recipe import Recipe

__all__ = ["TorchMLP", "TorchRunner"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Block(nn.Module):
    """``linear -> norm? -> activation``."""

    def __init__(self, linear: nn.Linear, norm: nn.Module | None, activation: nn.Module
                 ) -> None:
        super().__init__()
        self.linear = linear
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.activation(x)  # type: ignore[no-any-return]


class TorchMLP(nn.Module):
    """Hidden blocks, then a linear ``output`` layer; weights from the recipe's initializers
    (drawn from ``generator``), biases zero.

    Raises:
        ConfigError: a layer normalizer is a data scaler, not a layer.
    """

    def __init__(self, recipe: Recipe, num_features: int, num_outputs: int,
                 generator: torch.Generator, dtype: torch.dtype) -> None:
        super().__init__()
        registry = default_registry()
        blocks = []
        width = num_features
        for index, layer in enumerate(recipe.model.layers):
            linear = nn.Linear(width, layer.units, dtype=dtype)
            _initialize(linear, Initializer(layer.initializer, registry), generator)
            norm = None
            if layer.normalizer is not None:
                norm = build(layer.normalizer, backend="torch", num_features=layer.units,
                             dtype=dtype)
                if not isinstance(norm, nn.Module):
                    raise ConfigError([ConfigIssue(f"model.layers.{index}.normalizer", (
                        f"{layer.normalizer.name!r} is a data scaler, not a normalization "
                        f"layer; put it in data.normalizer"))])
            blocks.append(_Block(linear, norm, build(layer.activation, backend="torch")))
            width = layer.units
        self.layers = nn.ModuleList(blocks)
        self.output = nn.Linear(width, num_outputs, dtype=dtype)
        output_spec = recipe.model.output_initializer or recipe.model.layers[-1].initializer
        _initialize(self.output, Initializer(output_spec, registry), generator)
        # The leaf modules in order, called directly: a container's call costs as much as a
        # small layer's, and a training step makes thousands of them.
        self._leaves: list[nn.Module] = [
            module for block in blocks for module in (block.linear, block.norm,
                                                      block.activation)
            if module is not None] + [self.output]
        self.weights = [block.linear.weight for block in blocks] + [self.output.weight]
        self._activations = {position: index for index, position in enumerate(
            p for p, leaf in enumerate(self._leaves)
            if any(leaf is block.activation for block in blocks))}
        # Per-layer sums (optiplug.training.diagnostics) kept as tensors: no sync per batch.
        self.stats: LayerStats | None = None
        self.record_activations = False  # set per epoch; the next training forward reads them
        self.activation_sums = torch.zeros(len(blocks), 2, dtype=torch.float64)
        self.activation_count = [0] * len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recording = self.stats is not None and self.training and self.record_activations
        self.record_activations = self.record_activations and not recording
        for position, module in enumerate(self._leaves):
            x = module(x)
            if recording and position in self._activations:
                index = self._activations[position]
                flat = x.detach().reshape(-1).double()
                self.activation_sums[index] += torch.stack((flat.sum(), flat.dot(flat)))
                self.activation_count[index] += flat.numel()
        return x


def _initialize(linear: nn.Linear, init: Initializer, generator: torch.Generator) -> None:
    with torch.no_grad():
        init(linear.weight, generator=generator)
        linear.bias.zero_()


class TorchRunner:
    """Trains the recipe's :class:`TorchMLP` with the recipe's torch optimizer and scheduler."""

    backend = "torch"
    checkpoint_suffix = ".pt"

    def __init__(self, recipe: Recipe, data: Any) -> None:
        self.data = data
        dtype = _DTYPES[recipe.train.dtype]
        self.generator = torch.Generator().manual_seed(recipe.train.seed)
        self.model = TorchMLP(recipe, data.num_features, data.num_outputs, self.generator,
                              dtype)
        self.classification = data.task == "classification"
        self.loss = functional.cross_entropy if recipe.loss == "cross_entropy" else \
            functional.mse_loss
        self.x_train = torch.from_numpy(data.x_train)
        self.y_train = torch.from_numpy(data.y_train)
        self.x_val = torch.from_numpy(data.x_val)
        self.y_val = torch.from_numpy(data.y_val)
        try:
            self.optimizer = build(recipe.optimizer_spec(), backend="torch", params=self.model)
        except ConfigError as exc:
            raise exc.prefixed("optimizer") from None
        self.scheduler = None if recipe.scheduler is None else build(
            recipe.scheduler, backend="torch", optimizer=self.optimizer)
        if recipe.train.layer_stats:
            self.model.stats = LayerStats([f"layers.{i}" for i in range(len(self.model.layers))]
                                          + ["output"])
        self._grad_sums = torch.zeros(len(self.model.weights), dtype=torch.float64)
        self._grad_steps = torch.zeros(len(self.model.weights), dtype=torch.int64)

    def layer_stats(self) -> dict[str, dict[str, float | None]] | None:
        """The per-layer statistics of the epoch just trained (``None`` when off)."""
        stats = self.model.stats
        if stats is None:
            return None
        sums = self.model.activation_sums.tolist()
        for index, ((total, total_sq), count) in enumerate(zip(
                sums, self.model.activation_count, strict=True)):
            stats.add_activation(index, total, total_sq, count)
        stats.add_grad_norms(self._grad_sums.tolist(), steps=self._grad_steps.tolist())
        self.model.activation_sums.zero_()
        self.model.activation_count = [0] * len(self.model.activation_count)
        self._grad_sums.zero_()
        self._grad_steps.zero_()
        return stats.finish()

    def train_epoch(self, order: np.ndarray[Any, Any] | None, batch_size: int,
                    after_batch: Any = None) -> tuple[float, float | None]:
        """One pass over the training split in ``order`` (``None``: one full batch).

        ``after_batch(loss, size)``, if given, is called after every optimizer step with the
        batch's mean loss and its number of samples.

        Returns:
            The loss and accuracy (``None`` for regression) averaged over the epoch's samples,
            each as the model was when it trained on them.
        """
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss
        recording = model.stats is not None
        model.record_activations = recording
        x, y = self.x_train, self.y_train
        model.train(True)
        if order is None:
            batches: Any = [(x, y)]
        else:
            index = torch.from_numpy(order)
            batches = ((x[part], y[part]) for part in torch.split(index, batch_size))
        # The models are CPU models: reading a scalar costs less than adding tensors.
        loss_sum = 0.0
        correct = 0
        closure_driven = getattr(optimizer, "requires_closure", False)
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            output = model(xb)
            loss = loss_fn(output, yb)
            loss.backward()  # type: ignore[no-untyped-call]
            if recording:
                norms = torch.stack(torch._foreach_norm(
                    [w.grad if w.grad is not None else torch.zeros_like(w)
                     for w in model.weights])).double()
                finite = norms.isfinite()
                self._grad_sums += torch.where(finite, norms, 0.0)
                self._grad_steps += finite
            if closure_driven:
                # step(closure) (e.g. SAM): the first call keeps the gradients just computed,
                # later ones re-evaluate the batch at the parameters the optimizer set.
                optimizer.step(_batch_closure(model, loss_fn, optimizer, xb, yb, loss))
                model.record_activations = recording
            else:
                optimizer.step()
            value = loss.item()
            loss_sum += value * len(yb)
            if self.classification:
                correct += int((output.detach().argmax(dim=1) == yb).sum())
            if after_batch is not None:
                after_batch(value, len(yb))
        n = len(y)
        return loss_sum / n, correct / n if self.classification else None

    def evaluate(self, split: str) -> tuple[float, float | None]:
        """Loss and accuracy (``None`` for regression) on ``train`` or ``val``, in eval mode."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_val, self.y_val)
        self.model.train(False)
        try:
            with torch.no_grad():
                output = self.model(x)
                value = float(self.loss(output.double(), y if self.classification
                                        else y.double()))
                accuracy = (float((output.argmax(dim=1) == y).sum()) / len(y)
                            if self.classification else None)
        finally:
            self.model.train(True)
        return value, accuracy

    def state(self) -> dict[str, Any]:
        """Model, optimizer, scheduler and generator state for a checkpoint."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`, all or nothing.

        Raises:
            ValueError, KeyError, TypeError, RuntimeError: the state does not fit this model,
                optimizer, scheduler or generator; nothing is changed then.
        """
        # A later part can refuse after an earlier one loaded (and torch's strict
        # ``load_state_dict`` copies the matching tensors before it raises): then the earlier
        # ones are put back. A deep copy, as the state dicts share the live tensors' storage.
        previous = copy.deepcopy(self.state())
        try:
            self._restore(state)
        except BaseException:
            self._restore(previous)
            raise

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state.get("scheduler") is None:
                raise ValueError("the checkpoint has no scheduler state")
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])

    def save(self, path: Any, meta: dict[str, Any]) -> None:
        """Write a checkpoint with ``meta`` (loop state, kept as JSON text)."""
        from .checkpoint import save_torch_checkpoint

        save_torch_checkpoint(path, {"meta": json.dumps(meta), **self.state()})

    def read_checkpoint(self, path: Any) -> dict[str, Any]:
        """Read a checkpoint (``weights_only=True``): :meth:`state` plus ``meta``, the loop
        state; restores nothing.

        Raises:
            CheckpointError: unreadable, corrupt, or without loop state.
        """
        from .checkpoint import CheckpointError, load_torch_checkpoint

        payload = load_torch_checkpoint(path)
        try:
            meta = json.loads(payload["meta"])
        except (KeyError, TypeError, ValueError, RecursionError):
            meta = None
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {path} is corrupt: no loop state")
        return {**payload, "meta": meta}


def _batch_closure(model: Any, loss_fn: Any, optimizer: Any, xb: torch.Tensor,
                   yb: torch.Tensor, loss: torch.Tensor) -> Any:
    """A closure for ``step(closure)``: the batch's loss with its gradients in ``.grad``; the
    first call returns the loss whose gradients were just computed, each later one zeroes the
    grads and runs a fresh forward and backward pass (without recording activation
    statistics)."""
    first = [loss]

    def closure() -> Any:
        if first:
            return first.pop()
        model.record_activations = False
        optimizer.zero_grad(set_to_none=True)
        again = loss_fn(model(xb), yb)
        again.backward()
        return again

    return closure
