"""Fixtures of the seam tests: the training tests' recipe file writer."""

from __future__ import annotations

from tests.training.conftest import recipe_file

__all__ = ["recipe_file"]
