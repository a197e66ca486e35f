"""``optiplug new KIND NAME``: write a plugin package skeleton that installs and passes the kit.

The skeleton is a complete distribution: ``pyproject.toml`` with the ``optiplug.plugins`` entry
point, a ``src/`` package holding the technique file (docstring, spec, NumPy builder, torch
builder, hookimpl) with a small but real technique of the kind, a README, and tests that check
the technique against a reference and run the conformance kit. Replace the math, keep the shape.
"""

from __future__ import annotations

import keyword
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

__all__ = ["add_commands", "scaffold"]

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

_PYPROJECT: Final = '''\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$title: an optiplug $kind plugin."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["optiplug>=$optiplug_version", "numpy>=1.24"]

[project.optional-dependencies]
torch = ["torch>=2.2,<3"]
test = ["pytest>=8"]

# optiplug discovers the plugin through this entry point (group "optiplug.plugins").
[project.entry-points."optiplug.plugins"]
"$kind.$name" = "$package.$name"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
$package = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_README: Final = '''\
# $dist

An [optiplug](https://pypi.org/project/optiplug/) plugin: the $kind `$name`, on NumPy and
PyTorch.

```
pip install .
optiplug list --kind $kind          # $name ... $dist 0.1.0
optiplug show $kind $name
pytest                               # reference tests and the optiplug conformance kit
```

Edit `src/$package/$name.py`: the docstring (what, when, reference), the spec (every
hyperparameter typed, constrained and documented), the NumPy and torch builders. Keep the tests
passing: `pytest --optiplug-conformance=$dist` checks the plugin against the optiplug contract.
'''

_INIT: Final = '''\
"""$dist: the optiplug $kind ``$name``.

Nothing is imported here: optiplug loads
:mod:`$package.$name` through its entry point.
"""
'''

_TEST_KIT: Final = '''\
"""The optiplug conformance kit over this distribution."""

from __future__ import annotations

import pytest
from optiplug.testing import Check, conformance_checks


@pytest.mark.parametrize("check", conformance_checks("$dist"), ids=str)
def test_${name}_passes_the_conformance_kit(check: Check) -> None:
    check.run()
'''

_OPTIMIZER: Final = '''\
"""$title: stochastic gradient descent with heavy-ball momentum (edit: your optimizer).

Accumulates a velocity ``b = momentum * b + g`` and steps ``p -= lr * b``. Replace the update
rule with yours in
``Numpy$cls.update`` and in
``$cls.step`` (in ``_torch_$name.py``).

    b = momentum b + g;   p = p - lr b

Reference: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import NDArray
from optiplug.backends.numpy import NumpyOptimizer


class ${cls}Spec(optiplug.OptimizerSpec):
    """$title hyperparameters."""

    name: Literal["$name"] = "$name"
    lr: optiplug.PositiveFloat = 0.01
    """Learning rate."""
    momentum: optiplug.Beta = 0.9
    """Decay of the velocity, in [0, 1)."""


class Numpy$cls(NumpyOptimizer):
    """$title on NumPy arrays: the base class handles groups, state dicts and blocking."""

    state_keys = ("momentum_buffer",)
    scratch_blocks = 1

    def __init__(self, params: Any, lr: float, momentum: float, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return group["lr"], group["momentum"]

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        lr, momentum = scalars
        buffer, step = state[0], scratch[0]
        np.multiply(buffer, momentum, out=buffer)
        np.add(buffer, grad, out=buffer)
        np.multiply(buffer, lr, out=step)
        np.subtract(param, step, out=param)


def build_numpy(spec: ${cls}Spec, params: Any) -> Numpy$cls:
    return Numpy$cls(params, lr=spec.lr, momentum=spec.momentum)


def build_torch(spec: ${cls}Spec, params: Any) -> Any:
    from $package._torch_$name import $cls

    return $cls(params, lr=spec.lr, momentum=spec.momentum)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="$name", spec=${cls}Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="$title: "
                "SGD with heavy-ball momentum (edit this summary).",
        reference="Polyak 1964")]
'''

_OPTIMIZER_TORCH: Final = '''\
"""$title as a ``torch.optim.Optimizer`` with multi-tensor (foreach) updates.

Imported only by the torch builder: it imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class $cls(torch.optim.Optimizer):
    """$title: ``b = momentum * b + g``, ``p -= lr * b``."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float) -> None:
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            buffers = []
            for param in params:
                state = self.state[param]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, torch._foreach_mul(buffers, group["lr"]), alpha=-1)
        return loss
'''

_OPTIMIZER_TEST: Final = '''\
"""$title against its update rule written out by hand."""

from __future__ import annotations

import numpy as np
import optiplug
import pytest


def reference(p: float, grads: list[float], lr: float, momentum: float) -> float:
    buffer = 0.0
    for g in grads:
        buffer = momentum * buffer + g
        p = p - lr * buffer
    return p


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_${name}_follows_the_update_rule(backend: str) -> None:
    grads = [0.5, -1.0, 2.0, 0.25]
    if backend == "numpy":
        param = np.array([1.0])
        opt = optiplug.optimizer("$name", [param], lr=0.1, momentum=0.5)
        for g in grads:
            opt.step([np.array([g])])
        value = float(param[0])
    else:
        torch = pytest.importorskip("torch")
        tensor = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = optiplug.optimizer("$name", [tensor], lr=0.1, momentum=0.5)
        for g in grads:
            tensor.grad = torch.tensor([g], dtype=torch.float64)
            opt.step()
        value = float(tensor[0])
    assert value == pytest.approx(reference(1.0, grads, 0.1, 0.5), rel=1e-15)
'''

_SCHEDULER: Final = '''\
"""$title: inverse square-root decay (edit: your schedule).

``lr_t = base_lr / sqrt(1 + decay * t)``: a slow, scale-free decay, common after a warm-up in
transformer training. Replace ``get_lr`` in both classes with your schedule.

Reference: Vaswani et al., "Attention Is All You Need", 2017 (the decay half of its schedule).
"""

from __future__ import annotations

from typing import Any, Literal

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class ${cls}Spec(optiplug.SchedulerSpec):
    """$title hyperparameters."""

    name: Literal["$name"] = "$name"
    decay: optiplug.PositiveFloat = 0.1
    """How fast the learning rate falls: ``lr_t = base_lr / sqrt(1 + decay * t)``."""


def ${name}_lr(base_lr: float, decay: float, step: int) -> float:
    """The learning rate at ``step``; one formula for both backends."""
    return base_lr / (1.0 + decay * step) ** 0.5


class Numpy$cls(NumpyScheduler):
    """$title for NumPy optimizers (closed form: resumable and exact)."""

    def __init__(self, optimizer: Any, decay: float, last_epoch: int = -1) -> None:
        self.decay = decay
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [${name}_lr(base, self.decay, self.last_epoch) for base in self.base_lrs]


def build_numpy(spec: ${cls}Spec, optimizer: Any) -> Numpy$cls:
    return Numpy$cls(optimizer, decay=spec.decay)


def build_torch(spec: ${cls}Spec, optimizer: Any) -> Any:
    from $package._torch_$name import Torch$cls

    return Torch$cls(optimizer, decay=spec.decay)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="$name", spec=${cls}Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="$title: "
                "inverse square-root learning-rate decay (edit this summary).",
        reference="Vaswani et al. 2017")]
'''

_SCHEDULER_TEST: Final = '''\
"""$title against its formula."""

from __future__ import annotations

import numpy as np
import optiplug
import pytest


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_${name}_follows_the_formula(backend: str) -> None:
    if backend == "numpy":
        from optiplug.backends.numpy import NumpyOptimizer

        class Plain(NumpyOptimizer):
            def prepare(self, group, state):
                return None

            def update(self, param, grad, state, scratch, scalars):
                pass

        opt = Plain([np.zeros(1)], {"lr": 0.5})
    else:
        torch = pytest.importorskip("torch")
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = optiplug.scheduler("$name", opt, decay=0.25)
    lrs = []
    for _ in range(5):
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.5 / (1 + 0.25 * t) ** 0.5 for t in range(1, 6)], rel=1e-15)
'''

_INITIALIZER: Final = '''\
"""$title: scaled fan-in normal initialization (edit: your initializer).

``W ~ N(0, scale**2 / fan_in)``, with ``fan_in = in_features * prod(kernel)`` for a weight of
shape ``(out_features, in_features, *kernel)``: ``scale=1`` is LeCun's, ``sqrt(2)`` He's.

Reference: LeCun et al., "Efficient BackProp", 1998.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import DTypeLike, NDArray


class ${cls}Spec(optiplug.InitializerSpec):
    """$title hyperparameters."""

    name: Literal["$name"] = "$name"
    scale: optiplug.PositiveFloat = 1.0
    """Standard deviation times ``sqrt(fan_in)``."""

    def std(self, shape: Sequence[int]) -> float:
        """The standard deviation for a weight of ``shape``."""
        if len(shape) < 2:
            raise ValueError(f"needs a weight with at least 2 dimensions, got {shape}")
        return self.scale / math.sqrt(shape[1] * math.prod(shape[2:]))

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        """The variance the conformance kit checks samples against."""
        return self.std(shape) ** 2

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        """The mean the conformance kit checks samples against."""
        return 0.0


def build_numpy(spec: ${cls}Spec) -> Any:
    def fill(shape: int | Sequence[int], *, dtype: DTypeLike = np.float32,
             rng: np.random.Generator | None = None) -> NDArray[Any]:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        rng = rng if rng is not None else np.random.default_rng()
        return rng.normal(0.0, spec.std(dims), size=dims).astype(dtype)

    return fill


def build_torch(spec: ${cls}Spec) -> Any:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.normal_(tensor, 0.0, spec.std(tuple(tensor.shape)),
                                     generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="$name", spec=${cls}Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="$title: "
                "normal weights with variance scale^2 / fan_in (edit this summary).",
        reference="LeCun et al. 1998")]
'''

_INITIALIZER_TEST: Final = '''\
"""$title samples against the normal distribution it declares."""

from __future__ import annotations

import numpy as np
import optiplug


def test_${name}_samples_have_std_scale_over_sqrt_fan_in() -> None:
    init = optiplug.initializer("$name", scale=2.0)
    weight = init((400, 100, 3), rng=np.random.default_rng(0))
    std = 2.0 / np.sqrt(300)
    assert abs(weight.std() / std - 1) < 6 * np.sqrt(0.5 / weight.size)
    assert abs(weight.mean()) < 6 * std / np.sqrt(weight.size)
'''

_ACTIVATION: Final = '''\
"""$title: softsign, ``x / (1 + |x|)`` (edit: your activation).

A smooth, bounded alternative to tanh whose tails approach +-1 polynomially rather than
exponentially, so it saturates more gently.

    y = x / (1 + |x|);   dy/dx = 1 / (1 + |x|)^2

Reference: Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import NDArray
from optiplug.backends.numpy import NumpyModule


class ${cls}Spec(optiplug.ActivationSpec):
    """$title: no hyperparameters."""

    name: Literal["$name"] = "$name"


class Numpy$cls(NumpyModule):
    """$title forward and analytic backward."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._denominator = 1 + np.abs(x)
        return x / self._denominator

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out / (self._denominator * self._denominator)


def build_numpy(spec: ${cls}Spec) -> Numpy$cls:
    return Numpy$cls()


def build_torch(spec: ${cls}Spec) -> Any:
    import torch

    return torch.nn.Softsign()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="$name", spec=${cls}Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="$title: "
                "softsign x / (1 + |x|), a gently saturating tanh (edit this summary).",
        reference="Glorot & Bengio 2010")]
'''

_ACTIVATION_TEST: Final = '''\
"""$title against its formula."""

from __future__ import annotations

import numpy as np
import optiplug


def test_${name}_matches_its_formula_and_derivative() -> None:
    x = np.linspace(-5, 5, 41)
    layer = optiplug.activation("$name")
    np.testing.assert_allclose(layer(x), x / (1 + np.abs(x)), rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), 1 / (1 + np.abs(x)) ** 2,
                               rtol=1e-15)
'''

_NORMALIZER: Final = '''\
"""$title: scale normalization, ``g * x / ||x||`` over the features (edit: your normalizer).

Projects every sample onto the sphere of learned radius ``g`` (one scalar): a cheaper
alternative to layer norm in transformers.

    r = sqrt(sum x^2 + eps);  y = g x / r;
    dL/dx = g (w / r - x (x . w) / r^3);  dL/dg = sum(w x / r)     (w = dL/dy)

Reference: Nguyen & Salazar, "Transformers without Tears", IWSLT 2019.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import DTypeLike, NDArray
from optiplug.backends.numpy import NumpyModule


class ${cls}Spec(optiplug.NormalizerSpec):
    """$title hyperparameters."""

    name: Literal["$name"] = "$name"
    init_scale: optiplug.PositiveFloat = 1.0
    """Initial value of the learned radius ``g``."""
    eps: optiplug.PositiveFloat = 1e-6
    """Added to the squared norm before the square root."""


class Numpy$cls(NumpyModule):
    """$title over the last axis, with the learned scalar ``g`` in ``params``."""

    def __init__(self, spec: ${cls}Spec, dtype: DTypeLike) -> None:
        super().__init__()
        self.eps = spec.eps
        self.params["g"] = np.full(1, spec.init_scale, dtype=dtype)
        self.grads["g"] = np.zeros(1, dtype=dtype)

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        self._r = np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + self.eps)
        return (self.params["g"] * (x / self._r)).astype(x.dtype, copy=False)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x, r, g = self._x, self._r, self.params["g"]
        self.grads["g"][...] = np.sum(grad_out * x / r)
        dot = np.sum(x * grad_out, axis=-1, keepdims=True)
        return (g * (grad_out / r - x * dot / r**3)).astype(x.dtype, copy=False)


def build_numpy(spec: ${cls}Spec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> Numpy$cls:
    return Numpy$cls(spec, dtype)


def build_torch(spec: ${cls}Spec, num_features: int | None = None) -> Any:
    from $package._torch_$name import Torch$cls

    return Torch$cls(init_scale=spec.init_scale, eps=spec.eps)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="$name", spec=${cls}Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="$title: "
                "scale normalization g * x / ||x|| with one learned radius (edit this summary).",
        reference="Nguyen & Salazar 2019")]
'''

_NORMALIZER_TEST: Final = '''\
"""$title against its formula."""

from __future__ import annotations

import numpy as np
import optiplug


def test_${name}_puts_every_sample_on_the_sphere_of_radius_g() -> None:
    x = np.random.default_rng(0).standard_normal((4, 6))
    layer = optiplug.normalizer("$name", init_scale=3.0, eps=1e-12)
    y = layer(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 3.0, rtol=1e-12)
    np.testing.assert_allclose(y, 3.0 * x / np.linalg.norm(x, axis=-1, keepdims=True),
                               rtol=1e-12)
'''

_SCHEDULER_TORCH: Final = '''\
"""$title as a ``torch.optim.lr_scheduler.LRScheduler``.

Imported only by the torch builder: it imports torch.
"""

from __future__ import annotations

from typing import Any

import torch

from $package.$name import ${name}_lr


class Torch$cls(torch.optim.lr_scheduler.LRScheduler):
    """$title for torch optimizers (the same formula as the NumPy scheduler)."""

    def __init__(self, optimizer: Any, decay: float, last_epoch: int = -1) -> None:
        self.decay = decay
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [${name}_lr(base, self.decay, self.last_epoch) for base in self.base_lrs]
'''

_NORMALIZER_TORCH: Final = '''\
"""$title as a ``torch.nn.Module``.

Imported only by the torch builder: it imports torch.
"""

from __future__ import annotations

import torch


class Torch$cls(torch.nn.Module):
    """$title over the last dimension with a learned scalar radius ``g``."""

    def __init__(self, init_scale: float, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.g = torch.nn.Parameter(torch.full((1,), init_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g * x / torch.sqrt((x * x).sum(-1, keepdim=True) + self.eps)
'''

_TEMPLATES: Final[dict[str, tuple[str, str, str | None]]] = {
    "optimizer": (_OPTIMIZER, _OPTIMIZER_TEST, _OPTIMIZER_TORCH),
    "scheduler": (_SCHEDULER, _SCHEDULER_TEST, _SCHEDULER_TORCH),
    "initializer": (_INITIALIZER, _INITIALIZER_TEST, None),
    "activation": (_ACTIVATION, _ACTIVATION_TEST, None),
    "normalizer": (_NORMALIZER, _NORMALIZER_TEST, _NORMALIZER_TORCH),
}


def _optiplug_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optiplug")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.1"


def scaffold(kind: str, name: str, directory: str | Path | None = None) -> list[Path]:
    """Write the plugin package skeleton for technique ``kind``/``name``.

    Args:
        kind: One of optimizer, initializer, activation, normalizer, scheduler.
        name: The technique's name: lowercase letters, digits and underscores, starting with a
            letter (it becomes a module name).
        directory: Where to write it; ``optiplug-<name>`` in the current directory by default.
            It must not exist or be empty.

    Returns:
        The files written.

    Raises:
        ValueError: bad kind or name, or the directory is not empty.
    """
    from .specs import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(f"invalid technique name {name!r}: use lowercase letters, digits and "
                         f"underscores, starting with a letter")
    dist = "optiplug-" + name.replace("_", "-")
    root = Path(directory) if directory is not None else Path(dist)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty directory")
    values = {
        "kind": kind, "name": name, "dist": dist, "package": f"optiplug_{name}",
        "cls": "".join(part.capitalize() for part in name.split("_") if part),
        "title": name.replace("_", " ").capitalize(),
        "optiplug_version": _optiplug_version(),
    }
    technique, test, torch_helper = _TEMPLATES[kind]
    package = Path("src") / values["package"]
    files: dict[Path, str] = {
        Path("pyproject.toml"): _PYPROJECT,
        Path("README.md"): _README,
        package / "__init__.py": _INIT,
        package / "py.typed": "",
        package / f"{name}.py": technique,
        Path("tests") / f"test_{name}.py": test,
        Path("tests") / "test_conformance.py": _TEST_KIT,
    }
    if torch_helper is not None:
        files[package / f"_torch_{name}.py"] = torch_helper
    written = []
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template).substitute(values), encoding="utf-8")
        written.append(path)
    return written


def _cmd_new(args: argparse.Namespace) -> int:
    import sys

    try:
        written = scaffold(args.kind, args.name, args.dir)
    except ValueError as exc:
        print(f"optiplug: error: {exc}", file=sys.stderr)
        return 2
    root = written[0].parent
    print(f"wrote {args.kind} plugin '{args.name}' in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(f"next: pip install -e {root} && pytest {root}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``optiplug new KIND NAME [--dir DIR]`` to the ``optiplug`` command."""
    parser = subparsers.add_parser(
        "new", help="write a plugin package skeleton (spec, both backends, tests, pyproject)")
    parser.add_argument("kind", help="optimizer, initializer, activation, normalizer or "
                                     "scheduler")
    parser.add_argument("name", help="technique name (lowercase, digits, underscores)")
    parser.add_argument("--dir", help="target directory (default: ./optiplug-NAME)")
    parser.set_defaults(func=_cmd_new)
