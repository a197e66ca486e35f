"""The recipe's MLP on NumPy: optiplug's NumPy layers, a fused loss and a NumPy optimizer.

Never imports torch. Parameter names match the torch model's (``layers.0.linear.weight``,
``layers.0.norm.weight``, ``output.bias``), so param-group rules select the same parameters on
both backends.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..backends.numpy import copy_arrays_into
from ..config import build
from ..errors import ConfigError, ConfigIssue
from ..specs import Spec
from .diagnostics import LayerStats
from .recipe import Recipe

__all__ = ["NumpyLinear", "NumpyMLP", "cross_entropy", "mse"]

Array = NDArray[Any]


class NumpyLinear:
    """``y = x W^T + b`` with ``W`` in torch's ``(out, in)`` layout; a NumPy layer."""

    optiplug_backend = "numpy"

    def __init__(self, weight: Array, *, input_grad: bool = True) -> None:
        self.params: dict[str, Array] = {
            "weight": np.ascontiguousarray(weight),
            "bias": np.zeros(weight.shape[0], dtype=weight.dtype)}
        self.grads: dict[str, Array] = {name: np.zeros_like(value)
                                        for name, value in self.params.items()}
        self.buffers: dict[str, Array] = {}
        # The first layer's input is data: its gradient is never needed, so never computed.
        self.input_grad = input_grad
        self._x: Array | None = None

    def forward(self, x: Array) -> Array:
        self._x = x
        out = x @ self.params["weight"].T
        out += self.params["bias"]
        return out

    def backward(self, grad_out: Array) -> Array | None:
        assert self._x is not None, "backward before forward"
        np.matmul(grad_out.T, self._x, out=self.grads["weight"])
        np.sum(grad_out, axis=0, out=self.grads["bias"])
        return grad_out @ self.params["weight"] if self.input_grad else None

    def train(self, mode: bool = True) -> NumpyLinear:
        return self

    def eval(self) -> NumpyLinear:
        return self


def cross_entropy(logits: Array, target: Array, *, grad: bool
                  ) -> tuple[float, Array | None, int]:
    """Mean softmax cross-entropy of integer ``target``, its gradient with respect to
    ``logits`` when ``grad`` (then ``logits`` is overwritten with it), and the number of
    correct argmax predictions."""
    rows = np.arange(len(target))
    correct = int(np.count_nonzero(logits.argmax(axis=1) == target))
    shifted = logits if grad else logits.copy()
    shifted -= shifted.max(axis=1, keepdims=True)
    true_logit = shifted[rows, target]
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0], dtype=np.float64) - true_logit))
    if not grad:
        return loss, None, correct
    shifted /= total * len(target)
    shifted[rows, target] -= 1.0 / len(target)
    return loss, shifted, correct


def mse(output: Array, target: Array, *, grad: bool) -> tuple[float, Array | None, int]:
    """Mean squared error over every element, its gradient when ``grad`` (then ``output`` is
    overwritten with it), and 0 (no accuracy)."""
    diff = output - target if not grad else np.subtract(output, target, out=output)
    loss = float(np.mean(np.square(diff, dtype=np.float64)))
    if not grad:
        return loss, None, 0
    diff *= 2.0 / diff.size
    return loss, diff, 0


class NumpyMLP:
    """Hidden blocks ``linear -> normalizer? -> activation``, then a linear output layer.

    Args:
        recipe: The validated recipe (its ``model`` section).
        num_features, num_outputs: Input and output widths.
        rng: Generator the initializers draw from.
        dtype: Floating-point type of the parameters.

    Raises:
        ConfigError: a layer normalizer is a data scaler, not a layer.
    """

    def __init__(self, recipe: Recipe, num_features: int, num_outputs: int,
                 rng: np.random.Generator, dtype: np.dtype[Any]) -> None:
        from ..api import Initializer
        from ..registry import default_registry

        registry = default_registry()
        self.modules: list[tuple[str, Any]] = []
        width = num_features
        for index, layer in enumerate(recipe.model.layers):
            init = Initializer(layer.initializer, registry)
            weight = init((layer.units, width), dtype=dtype, rng=rng)
            self.modules.append((f"layers.{index}.linear",
                                 NumpyLinear(weight, input_grad=index > 0)))
            if layer.normalizer is not None:
                self.modules.append((f"layers.{index}.norm", _norm_layer(
                    layer.normalizer, layer.units, dtype, f"model.layers.{index}.normalizer")))
            self.modules.append((f"layers.{index}.activation",
                                 build(layer.activation, backend="numpy")))
            width = layer.units
        output_spec = recipe.model.output_initializer or recipe.model.layers[-1].initializer
        weight = Initializer(output_spec, registry)((num_outputs, width), dtype=dtype, rng=rng)
        self.modules.append(("output", NumpyLinear(weight,
                                                   input_grad=bool(recipe.model.layers))))
        self.params: dict[str, Array] = {
            f"{prefix}.{name}": value for prefix, module in self.modules
            for name, value in module.params.items()}
        self._accumulating = [module for _, module in self.modules
                              if module.params and not isinstance(module, NumpyLinear)]
        # Per-layer statistics (optiplug.training.diagnostics), read while training.
        self.weight_names = [f"{name}.weight" for name, module in self.modules
                             if isinstance(module, NumpyLinear)]
        self._activations = {position: index for index, position in enumerate(
            p for p, (name, _) in enumerate(self.modules) if name.endswith(".activation"))}
        self.stats: LayerStats | None = None
        self.record_activations = False  # set per epoch; the next training forward reads them
        self._training = True

    def train(self, mode: bool = True) -> None:
        """Training (batch statistics) or evaluation mode for every layer."""
        self._training = mode
        for _, module in self.modules:
            module.train(mode)

    def forward(self, x: Array) -> Array:
        """The model's output for ``x`` (adding to :attr:`stats` while training)."""
        stats = self.stats if self._training and self.record_activations else None
        self.record_activations = self.record_activations and stats is None
        for position, (_, module) in enumerate(self.modules):
            x = module.forward(x)
            if stats is not None and position in self._activations:
                flat = x.reshape(-1)
                stats.add_activation(self._activations[position],
                                     float(flat.sum(dtype=np.float64)),
                                     float(np.dot(flat, flat)), flat.size)
        return x

    def backward(self, grad_out: Array) -> dict[str, Array]:
        """Backpropagate the output gradient; the parameter gradients by name."""
        # Registry layers may add into their grads (torch's .grad semantics): zero them first.
        for module in self._accumulating:
            module.zero_grad()
        grad: Array | None = grad_out
        for _, module in reversed(self.modules):
            assert grad is not None
            grad = module.backward(grad)
        return {f"{prefix}.{name}": value for prefix, module in self.modules
                for name, value in module.grads.items()}

    def state_dict(self) -> dict[str, Array]:
        """Copies of every parameter and buffer by name."""
        state = {}
        for prefix, module in self.modules:
            for name, value in {**module.params, **module.buffers}.items():
                state[f"{prefix}.{name}"] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Copy parameters and buffers in place; names and shapes must match.

        Raises:
            ValueError: a name is missing or extra, or a shape differs (nothing is changed).
        """
        own: dict[str, Array] = {}
        for prefix, module in self.modules:
            for name, value in {**module.params, **module.buffers}.items():
                own[f"{prefix}.{name}"] = value
        copy_arrays_into(own, state, "the recipe's model")


def _norm_layer(spec: Spec, units: int, dtype: np.dtype[Any], path: str) -> Any:
    layer = build(spec, backend="numpy", num_features=units, dtype=dtype)
    if not (hasattr(layer, "forward") and hasattr(layer, "backward")):
        raise ConfigError([ConfigIssue(path, (
            f"{spec.name!r} is a data scaler, not a normalization layer; put it in "
            f"data.normalizer"))])
    return layer


class NumpyRunner:
    """Trains the recipe's :class:`NumpyMLP` with the recipe's NumPy optimizer and scheduler.

    Args:
        recipe: The validated recipe.
        data: The split, scaled dataset (in the recipe's dtype).
    """

    backend = "numpy"
    checkpoint_suffix = ".npz"

    def __init__(self, recipe: Recipe, data: Any) -> None:
        self.data = data
        dtype = np.dtype(recipe.train.dtype)
        init_rng = np.random.default_rng([recipe.train.seed, 0])
        self.model = NumpyMLP(recipe, data.num_features, data.num_outputs, init_rng, dtype)
        self.loss = cross_entropy if recipe.loss == "cross_entropy" else mse
        try:
            self.optimizer = build(recipe.optimizer_spec(), backend="numpy",
                                   params=self.model.params)
        except ConfigError as exc:
            raise exc.prefixed("optimizer") from None
        self.scheduler = None if recipe.scheduler is None else build(
            recipe.scheduler, backend="numpy", optimizer=self.optimizer)
        if recipe.train.layer_stats:
            self.model.stats = LayerStats([name.rsplit(".", 2)[0] if name != "output.weight"
                                           else "output" for name in self.model.weight_names])

    def layer_stats(self) -> dict[str, dict[str, float | None]] | None:
        """The per-layer statistics of the epoch just trained (``None`` when off)."""
        return None if self.model.stats is None else self.model.stats.finish()

    def train_epoch(self, order: Array | None, batch_size: int,
                    after_batch: Any = None) -> tuple[float, float | None]:
        """One pass over the training split in ``order`` (``None``: one full batch).

        ``after_batch(loss, size)``, if given, is called after every optimizer step with the
        batch's mean loss and its number of samples.

        Returns:
            The loss and accuracy (``None`` for regression) averaged over the epoch's samples,
            each as the model was when it trained on them.
        """
        model, step, loss = self.model, self.optimizer.step, self.loss
        stats, weight_names = model.stats, model.weight_names
        model.record_activations = stats is not None
        x, y = self.data.x_train, self.data.y_train
        model.train(True)
        if order is None:
            batches: Any = [(x, y)]
        else:
            batches = ((x[index], y[index]) for index in
                       (order[start:start + batch_size]
                        for start in range(0, len(order), batch_size)))
        loss_sum = 0.0
        correct = 0
        closure_driven = getattr(self.optimizer, "requires_closure", False)
        for xb, yb in batches:
            value, grad_out, hits = loss(model.forward(xb), yb, grad=True)
            assert grad_out is not None
            loss_sum += value * len(yb)
            correct += hits
            grads = model.backward(grad_out)
            if stats is not None:
                stats.add_grad_norms([math.sqrt(float(np.vdot(grads[name], grads[name])))
                                      for name in weight_names])
            if closure_driven:
                # step(closure) (e.g. SAM): the first call returns what was just computed,
                # later ones re-evaluate the batch at the parameters the optimizer set.
                step(_batch_closure(model, loss, xb, yb, value, grads))
                model.record_activations = stats is not None
            else:
                step(grads)
            if after_batch is not None:
                after_batch(value, len(yb))
        n = len(y)
        return loss_sum / n, correct / n if self.data.task == "classification" else None

    def evaluate(self, split: str) -> tuple[float, float | None]:
        """Loss and accuracy (``None`` for regression) on ``train`` or ``val``, in eval mode."""
        x, y = ((self.data.x_train, self.data.y_train) if split == "train"
                else (self.data.x_val, self.data.y_val))
        self.model.train(False)
        try:
            value, _, correct = self.loss(self.model.forward(x), y, grad=False)
        finally:
            self.model.train(True)
        accuracy = correct / len(y) if self.data.task == "classification" else None
        return value, accuracy

    def state(self) -> dict[str, Any]:
        """Copies of the model, optimizer and scheduler state, for a checkpoint."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`, all or nothing.

        Raises:
            ValueError, KeyError, TypeError: the state does not fit this model, optimizer or
                scheduler; nothing is changed then.
        """
        # Each part checks its state before changing anything, but a later part can still
        # refuse after an earlier one loaded: then the earlier ones are put back.
        previous = self.state()
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

    def save(self, path: Any, meta: dict[str, Any]) -> None:
        """Write a checkpoint with ``meta`` (loop state: epoch, history, RNG)."""
        from .checkpoint import save_numpy_checkpoint

        save_numpy_checkpoint(path, {"meta": meta, **self.state()})

    def read_checkpoint(self, path: Any) -> dict[str, Any]:
        """Read a checkpoint: :meth:`state` plus ``meta``, the loop state; restores nothing.

        Raises:
            CheckpointError: unreadable, corrupt, or without loop state.
        """
        from .checkpoint import CheckpointError, load_numpy_checkpoint

        payload = load_numpy_checkpoint(path)
        if not isinstance(payload.get("meta"), dict):
            raise CheckpointError(f"checkpoint {path} is corrupt: no loop state")
        return payload


def _batch_closure(model: Any, loss: Any, xb: Array, yb: Array, value: float,
                   grads: dict[str, Array]) -> Any:
    """A closure for ``step(closure)``: ``(loss, grads)`` on the batch, the first call from the
    values already computed, each later one by a fresh forward and backward pass (without
    recording activation statistics)."""
    first: list[Any] = [(value, grads)]

    def closure() -> Any:
        if first:
            return first.pop()
        model.record_activations = False
        again, grad_out, _ = loss(model.forward(xb), yb, grad=True)
        return again, model.backward(grad_out)

    return closure
