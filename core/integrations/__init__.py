"""Adapters for the frameworks people train with: PyTorch Lightning, Hugging Face transformers
and Hydra/OmegaConf.

Each adapter turns one optiplug config (a file, a dict or an OmegaConf ``DictConfig``; either a
single optimizer or a document with ``optimizer:`` and ``scheduler:`` sections) into what the
framework expects, validating the whole config before any tensor is touched. The frameworks
are optional: install them with ``pip install 'optiplug[integrations]'``; nothing here imports
them, and ``import optiplug`` does not import this package.

- :func:`optiplug.integrations.lightning.configure_optimizers`: the return value of
  ``LightningModule.configure_optimizers`` (optimizer plus scheduler with its interval).
- :func:`optiplug.integrations.transformers.trainer_optimizers`: the ``optimizers=`` tuple of
  ``transformers.Trainer``.
- :func:`build_training`: the optimizer and scheduler of a config for any other loop.
"""

from __future__ import annotations

from ._common import Training, build_training

__all__ = ["Training", "build_training"]
