"""L-BFGS: a quasi-Newton method from the last ``history_size`` steps, driven by a closure.

Builds an approximation of the inverse Hessian from recent parameter and gradient changes and
steps along it, optionally with a strong-Wolfe line search. Each ``step`` runs up to
``max_iter`` iterations and so evaluates the loss several times: it takes a closure.

- torch: ``opt.step(closure)``, the closure zeroes the grads, computes the loss, calls
  ``backward()`` and returns the loss (as for ``torch.optim.LBFGS``).
- NumPy: ``opt.step(closure)``, the closure returns ``(loss, grads)`` at the current parameter
  values, ``grads`` a ``{name: array}`` dict (a missing or ``None`` gradient counts as zeros)
  or a list aligned with the parameters.

For full-batch, deterministic problems of moderate size (small networks, curve fitting,
style transfer); one param group only, like torch. The training loop (``optiplug run`` and
``compare``) steps once per batch without a closure, so it refuses this optimizer.

    d = -H g (two-loop recursion over (s, y) pairs, H0 = s.y / y.y);  p += t d
    t = lr (first iteration: min(1, 1 / |g|_1) lr), or found by the strong-Wolfe line search

Reference: Nocedal, "Updating Quasi-Newton Matrices with Limited Storage", Math. Comp. 1980;
Liu & Nocedal 1989; torch.optim.LBFGS (after minFunc).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer
from optiplug.param_groups import StandardOptimizerSpec

Array = NDArray[Any]


class LBFGSSpec(StandardOptimizerSpec):
    """L-BFGS (torch.optim.LBFGS's defaults)."""

    closure_driven: ClassVar[bool] = True
    single_group: ClassVar[bool] = True
    missing_grad_as_zero: ClassVar[bool] = True
    # NumPy sums in another order than torch; L-BFGS amplifies the last-bit differences as it
    # converges, about 100x per 20 iterations (tests/plugins/optimizers/test_lbfgs.py): the kit
    # holds the backends to 1e-9 over the first 3 steps (60 iterations).
    agreement_steps: ClassVar[int | None] = 3

    name: Literal["lbfgs"] = "lbfgs"
    lr: optiplug.PositiveFloat = 1.0
    """Step length (the line search's first trial step)."""
    max_iter: optiplug.PositiveInt = 20
    """Iterations per ``step``."""
    max_eval: optiplug.PositiveInt | None = None
    """Loss evaluations per ``step`` (``None``: ``max_iter * 5 // 4``)."""
    tolerance_grad: optiplug.NonNegativeFloat = 1e-7
    """Stop when the largest gradient entry is at most this."""
    tolerance_change: optiplug.NonNegativeFloat = 1e-9
    """Stop when the loss or the step changes less than this."""
    history_size: optiplug.PositiveInt = 100
    """Pairs ``(s, y)`` kept for the inverse-Hessian approximation."""
    line_search_fn: Literal["strong_wolfe"] | None = None
    """``strong_wolfe`` for a line search satisfying the strong Wolfe conditions, ``None`` for
    fixed steps of ``lr``."""
    nonfinite: Literal["ignore"] = "ignore"
    """``ignore`` only: the loss is re-evaluated within a step, so a step cannot be skipped."""


def _cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any,
                       bounds: tuple[Any, Any] | None = None) -> Any:
    xmin_bound, xmax_bound = bounds if bounds is not None else (
        (x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(evaluate: Callable[[Any], tuple[float, Array]], t: Any, d: Array, f: float,
                  g: Array, gtd: Any, tolerance_change: float, max_ls: int,
                  c1: float = 1e-4, c2: float = 0.9) -> tuple[float, Array, Any, int]:
    """torch.optim.LBFGS's strong-Wolfe line search along ``d`` (``evaluate(t)``: loss and
    flat gradient at ``x + t d``); returns the loss, gradient and step found, and the number
    of evaluations."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = evaluate(t)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[Any] = []
    bracket_f: list[Any] = []
    bracket_g: list[Array] = []
    bracket_gtd: list[Any] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = evaluate(t)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insufficient_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1],
                               bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                    else min(bracket) + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f_new, g_new = evaluate(t)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class NumpyLBFGS(NumpyOptimizer):
    """L-BFGS on NumPy arrays, iteration for iteration equal to ``torch.optim.LBFGS``.

    ``step(closure)``: ``closure()`` returns ``(loss, grads)`` at the current parameters. The
    state (torch's keys) is kept under the first parameter's name, as torch keeps it.
    """

    requires_closure = True

    def __init__(self, params: Any, lr: float = 1.0, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, **options: Any) -> None:
        super().__init__(params, {
            "lr": lr, "max_iter": max_iter,
            "max_eval": max_iter * 5 // 4 if max_eval is None else max_eval,
            "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
            "history_size": history_size, "line_search_fn": line_search_fn}, **options)
        if len(self.param_groups) != 1:
            raise ValueError("lbfgs doesn't support per-parameter options (parameter groups)")

    def _flat_grad(self, grads: Any) -> Array:
        group = self.param_groups[0]
        if isinstance(grads, Mapping):
            grads = [grads.get(name) for name in group["param_names"]]
        grads = list(grads)
        if len(grads) != len(group["params"]):
            raise ValueError(f"the closure gave {len(grads)} gradients for "
                             f"{len(group['params'])} parameters")
        return np.concatenate([np.zeros(p.size, p.dtype) if g is None
                               else np.asarray(g, p.dtype).reshape(-1)
                               for p, g in zip(group["params"], grads, strict=True)])

    def _add(self, step_size: Any, update: Array) -> None:
        offset = 0
        for param in self.param_groups[0]["params"]:
            param += param.dtype.type(step_size) * update[offset:offset + param.size].reshape(
                param.shape)
            offset += param.size

    def closure_step(self, closure: Callable[[], Any]) -> Any:
        group = self.param_groups[0]
        params = group["params"]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]

        def evaluate() -> tuple[Any, float, Array]:
            result = closure()
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError("the closure of a NumPy lbfgs returns (loss, grads)")
            return result[0], float(result[0]), self._flat_grad(result[1])

        state = self.state.setdefault(group["param_names"][0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss, loss, flat_grad = evaluate()
        current_evals = 1
        state["func_evals"] += 1
        if np.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag, prev_flat_grad = state.get("H_diag"), state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                al = state.setdefault("al", [None] * history_size)
                q = -flat_grad
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q -= q.dtype.type(al[i]) * old_dirs[i]
                d = r = q * q.dtype.type(h_diag)
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += r.dtype.type(al[i] - be_i) * old_stps[i]
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                np.copyto(prev_flat_grad, flat_grad)
            prev_loss = loss
            t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if group["line_search_fn"] is not None:
                start = [p.copy() for p in params]

                def along(step_size: Any, start: list[Array] = start,
                          direction: Array = d) -> tuple[float, Array]:
                    self._add(step_size, direction)
                    _, value, gradient = evaluate()
                    for param, value_at_start in zip(params, start, strict=True):
                        np.copyto(param, value_at_start)
                    return value, gradient

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    along, t, d, loss, flat_grad, gtd, tolerance_change,
                    max_eval - current_evals)
                self._add(t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add(t, d)
                opt_cond = False
                if n_iter != max_iter:
                    _, loss, flat_grad = evaluate()
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if (n_iter == max_iter or current_evals >= max_eval or opt_cond
                    or np.abs(d * t).max() <= tolerance_change
                    or abs(loss - prev_loss) < tolerance_change):
                break
        state.update({"d": d, "t": t, "old_dirs": old_dirs, "old_stps": old_stps, "ro": ro,
                      "H_diag": h_diag, "prev_flat_grad": prev_flat_grad,
                      "prev_loss": prev_loss})
        return orig_loss

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        saved["state"] = copy.deepcopy(self.state)
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict` of an lbfgs over parameters of the same names and sizes.

        Raises:
            optiplug.ConfigError: another optimizer's state, or other parameters; nothing is
                changed then.
        """
        group = self.param_groups[0]
        problem = None
        if not isinstance(state_dict, Mapping) or state_dict.get("optimizer") != type(
                self).__qualname__:
            problem = f"it is not the state of a {type(self).__qualname__}"
        elif [list(g.get("param_names", ())) for g in state_dict["param_groups"]] != [
                group["param_names"]]:
            problem = (f"the saved parameters differ from this optimizer's "
                       f"{group['param_names']}")
        else:
            saved = state_dict["state"].get(group["param_names"][0], {})
            size = sum(p.size for p in group["params"])
            if any(np.size(saved[key]) != size for key in ("d", "prev_flat_grad")
                   if saved.get(key) is not None):
                problem = f"the saved state is for {size} parameters' elements"
        if problem:
            raise optiplug.ConfigError(f"cannot load optimizer state: {problem}")
        self.state = copy.deepcopy(dict(state_dict["state"]))
        group.update({key: value for key, value in state_dict["param_groups"][0].items()
                      if key not in ("params", "param_names")})


def _single_group(spec: LBFGSSpec, params: Any) -> Any:
    grouped = spec.group_params(params)
    if grouped is not params and len(grouped) != 1:
        field = "param_groups" if spec.param_groups else "layer_decay"
        raise optiplug.ConfigError("lbfgs supports one param group (as torch.optim.LBFGS); "
                                   "these settings make several").prefixed(field)
    return grouped


def build_numpy(spec: LBFGSSpec, params: Any) -> NumpyLBFGS:
    return NumpyLBFGS(_single_group(spec, params), **spec.optimizer_arguments())


def build_torch(spec: LBFGSSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import LBFGS

    return LBFGS(_single_group(spec, params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lbfgs", spec=LBFGSSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Limited-memory BFGS with optional strong-Wolfe line search, for full-batch "
                "deterministic problems; closure-driven: step(closure), on NumPy the closure "
                "returns (loss, grads).",
        reference="Nocedal 1980; Liu & Nocedal 1989")]
