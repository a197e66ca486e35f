"""Composable update rules that run on NumPy and torch: write an optimizer once.

An optimizer is a chain of small transforms of the update, in the style of optax::

    import optiplug.transforms as ot

    adamw = ot.chain(ot.clip_by_global_norm(1.0), ot.scale_by_adam(),
                     ot.add_decayed_weights(0.01), ot.scale_by_learning_rate())
    opt = ot.chain_optimizer(adamw, model.parameters(), lr=1e-3)   # torch.optim.Optimizer
    opt = ot.chain_optimizer(adamw, {"w": w, "b": b}, lr=1e-3)     # NumPy optimizer

Each transform is written once against a tiny array namespace (:class:`ArrayOps`): NumPy runs
it on cache-sized blocks with in-place ufuncs, torch with one ``torch._foreach_*`` call per
operation over each param group. Chains get param groups, schedulers (``lr`` is read from the
group every step by ``scale_by_learning_rate``), ``state_dict`` by parameter name, lifecycle
hooks and config files (the ``chain`` optimizer) for free, and :func:`register_chain` turns
one into a named optimizer. See ``docs/custom_optimizers.md``.
"""

from __future__ import annotations

from ._base import (
    ArrayOps,
    Arrays,
    Chain,
    MultiTransform,
    PerTensorTransform,
    ScalarTransform,
    StepContext,
    Transform,
    register_transform,
    transform_class,
    transform_names,
)
from ._blocks import (
    AddDecayedWeights,
    Clip,
    ClipByGlobalNorm,
    ClipByTensorNorm,
    Scale,
    ScaleByAdam,
    ScaleByLearningRate,
    ScaleByMomentum,
    ScaleByRms,
    ScaleByTrustRatio,
    add_decayed_weights,
    chain,
    clip,
    clip_by_global_norm,
    clip_by_tensor_norm,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_momentum,
    scale_by_rms,
    scale_by_trust_ratio,
)
from ._spec import (
    ChainSpecBase,
    ChainTransforms,
    NamedChainSpec,
    TransformEntry,
    build_numpy,
    build_torch,
    chain_optimizer,
    chain_technique,
    register_chain,
    register_chain_config,
)

__all__ = [
    "AddDecayedWeights",
    "ArrayOps",
    "Arrays",
    "Chain",
    "ChainSpecBase",
    "ChainTransforms",
    "Clip",
    "ClipByGlobalNorm",
    "ClipByTensorNorm",
    "MultiTransform",
    "NamedChainSpec",
    "PerTensorTransform",
    "ScalarTransform",
    "Scale",
    "ScaleByAdam",
    "ScaleByLearningRate",
    "ScaleByMomentum",
    "ScaleByRms",
    "ScaleByTrustRatio",
    "StepContext",
    "Transform",
    "TransformEntry",
    "add_decayed_weights",
    "build_numpy",
    "build_torch",
    "chain",
    "chain_optimizer",
    "chain_technique",
    "clip",
    "clip_by_global_norm",
    "clip_by_tensor_norm",
    "multi_transform",
    "register_chain",
    "register_chain_config",
    "register_transform",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_rms",
    "scale_by_trust_ratio",
    "transform_class",
    "transform_names",
]


def multi_transform(transforms: dict[str, Chain | Transform | list[Transform]],
                    labels: object = None, default: str = "default") -> MultiTransform:
    """Different chains for different parameters (see :class:`MultiTransform`).

    Args:
        transforms: Label to chain.
        labels: ``{fnmatch pattern on parameter names: label}`` or
            ``labels(name, param) -> label``; a param group's ``"label"`` key wins over both.
        default: Label of the parameters nothing labels.
    """
    return MultiTransform(transforms, labels=labels, default=default)  # type: ignore[arg-type]
