"""The "done when" check of the initializer, activation and normalizer plugins: a two-layer
network built only from optiplug's NumPy plugins (linear layers and softmax cross-entropy are
written here) has the gradients torch's autograd gives for the same weights, and trains the
same way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optiplug

TOLERANCES = {np.float64: {"rtol": 1e-10, "atol": 1e-10},
              np.float32: {"rtol": 1e-5, "atol": 1e-5}}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}
TORCH_ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh,
                     "silu": torch.nn.SiLU}
TORCH_NORMALIZERS = {
    "batch_norm": lambda h, hyper: torch.nn.BatchNorm1d(h),
    "layer_norm": lambda h, hyper: torch.nn.LayerNorm(h),
    "group_norm": lambda h, hyper: torch.nn.GroupNorm(hyper["num_groups"], h),
    "rms_norm": lambda h, hyper: torch.nn.RMSNorm(h),
}
IN, HIDDEN, CLASSES, BATCH = 7, 8, 3, 16


class NumpyTwoLayerNetwork:
    """``logits = W2 act(norm(W1 x + b1)) + b2`` from optiplug's NumPy plugins."""

    def __init__(self, normalizer: str, hyper: dict[str, Any], activation: str,
                 dtype: type, rng: np.random.Generator) -> None:
        he, xavier = optiplug.initializer("he_normal"), optiplug.initializer("xavier_uniform")
        bias = optiplug.initializer("uniform", low=-0.1, high=0.1)
        self.params = {"w1": he((HIDDEN, IN), dtype=dtype, rng=rng),
                       "b1": bias((HIDDEN,), dtype=dtype, rng=rng),
                       "w2": xavier((CLASSES, HIDDEN), dtype=dtype, rng=rng),
                       "b2": bias((CLASSES,), dtype=dtype, rng=rng)}
        self.norm = optiplug.build({"kind": "normalizer", "name": normalizer, **hyper},
                                   backend="numpy", num_features=HIDDEN, dtype=dtype)
        for name, value in self.norm.params.items():  # away from 1 and 0: visible gradients
            value[...] = rng.uniform(0.5, 1.5, size=value.shape) if name == "weight" else \
                rng.uniform(-0.5, 0.5, size=value.shape)
        self.activation = optiplug.activation(activation)
        self.grads: dict[str, np.ndarray] = {}

    def train(self, mode: bool) -> None:
        self.norm.train(mode)

    def loss_and_backward(self, x: np.ndarray, labels: np.ndarray) -> float:
        p = self.params
        hidden = self.activation.forward(self.norm.forward(x @ p["w1"].T + p["b1"]))
        logits = hidden @ p["w2"].T + p["b2"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(len(labels)), labels].mean()
        grad_logits = np.exp(log_probs)
        grad_logits[np.arange(len(labels)), labels] -= 1
        grad_logits /= len(labels)
        self.grads["w2"] = grad_logits.T @ hidden
        self.grads["b2"] = grad_logits.sum(axis=0)
        self.norm.zero_grad()
        grad_pre = self.norm.backward(self.activation.backward(grad_logits @ p["w2"]))
        self.grads["w1"] = grad_pre.T @ x
        self.grads["b1"] = grad_pre.sum(axis=0)
        self.grads.update({f"norm.{k}": v for k, v in self.norm.grads.items()})
        return float(loss)

    def named_parameters(self) -> dict[str, np.ndarray]:
        return {**self.params, **{f"norm.{k}": v for k, v in self.norm.params.items()}}


def torch_twin(net: NumpyTwoLayerNetwork, normalizer: str, hyper: dict[str, Any],
               activation: str, dtype: type) -> torch.nn.Sequential:
    """torch's own layers holding the same weights."""
    first, second = torch.nn.Linear(IN, HIDDEN), torch.nn.Linear(HIDDEN, CLASSES)
    model = torch.nn.Sequential(first, TORCH_NORMALIZERS[normalizer](HIDDEN, hyper),
                                TORCH_ACTIVATIONS[activation](), second).to(TORCH_DTYPES[dtype])
    with torch.no_grad():
        for target, source in ((first.weight, "w1"), (first.bias, "b1"), (second.weight, "w2"),
                               (second.bias, "b2")):
            target.copy_(torch.from_numpy(net.params[source]))
        for name, value in net.norm.params.items():
            getattr(model[1], name).copy_(torch.from_numpy(value))
    return model


def torch_names(model: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    names = {"0.weight": "w1", "0.bias": "b1", "3.weight": "w2", "3.bias": "b2",
             "1.weight": "norm.weight", "1.bias": "norm.bias"}
    return {names[name]: param for name, param in model.named_parameters()}


def _data(dtype: type, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rng.normal(size=(BATCH, IN)).astype(dtype),
            rng.integers(0, CLASSES, size=BATCH))


CASES = [("batch_norm", {}, "relu"), ("layer_norm", {}, "gelu"),
         ("group_norm", {"num_groups": 4}, "tanh"), ("rms_norm", {}, "silu")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("normalizer,hyper,activation", CASES,
                         ids=[f"{n}-{a}" for n, _, a in CASES])
def test_two_layer_numpy_network_gradients_match_torch_autograd(
        normalizer: str, hyper: dict[str, Any], activation: str, training: bool,
        dtype: type) -> None:
    rng = np.random.default_rng(0)
    net = NumpyTwoLayerNetwork(normalizer, hyper, activation, dtype, rng)
    model = torch_twin(net, normalizer, hyper, activation, dtype)
    net.train(training)
    model.train(training)
    x, labels = _data(dtype, rng)
    loss = net.loss_and_backward(x, labels)
    loss_t = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels))
    loss_t.backward()
    tol = TOLERANCES[dtype]
    np.testing.assert_allclose(loss, loss_t.item(), **tol)
    params_t = torch_names(model)
    assert set(net.grads) == set(params_t) == set(net.named_parameters())
    for name, param in params_t.items():
        assert net.grads[name].dtype == dtype
        assert np.abs(net.grads[name]).max() > 0 or name == "b1"  # b1 cancels under batch norm
        np.testing.assert_allclose(net.grads[name], param.grad.numpy(), **tol, err_msg=name)


def test_two_layer_numpy_network_trains_like_torch_with_sgd() -> None:
    rng = np.random.default_rng(1)
    net = NumpyTwoLayerNetwork("batch_norm", {}, "relu", np.float64, rng)
    model = torch_twin(net, "batch_norm", {}, "relu", np.float64)
    sgd = torch.optim.SGD(model.parameters(), lr=0.5)
    params_t = torch_names(model)
    teacher = rng.normal(size=(IN, CLASSES))
    losses, losses_t = [], []
    for _ in range(20):
        x = rng.normal(size=(BATCH, IN))
        labels = (x @ teacher).argmax(axis=1)
        losses.append(net.loss_and_backward(x, labels))
        for name, param in net.named_parameters().items():
            param -= 0.5 * net.grads[name]
        sgd.zero_grad()
        loss_t = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels))
        loss_t.backward()
        sgd.step()
        losses_t.append(loss_t.item())
    np.testing.assert_allclose(losses, losses_t, rtol=1e-9)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # it learns the teacher's labels
    for name, param in net.named_parameters().items():
        np.testing.assert_allclose(param, params_t[name].detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(net.norm.buffers[name], getattr(model[1], name).numpy(),
                                   rtol=1e-9)
