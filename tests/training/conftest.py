"""Shared helpers of the training tests: small recipes that train in a fraction of a second."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from optiplug.training.recipe import DEFAULT_RECIPE


def small_recipe(**train: Any) -> dict[str, Any]:
    """The default digits recipe, shrunk: 300 samples, a 32-unit layer, 3 epochs."""
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe["data"]["samples"] = 300
    recipe["model"]["layers"][0]["units"] = 32
    recipe["train"].update({"epochs": 3, "batch_size": 32, **train})
    return recipe


@pytest.fixture
def recipe_file(tmp_path: Any) -> Any:
    """Write a recipe mapping as YAML and return its path."""
    import yaml

    def write(recipe: dict[str, Any], name: str = "recipe.yaml") -> Any:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return write


def without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics minus the wall time, the one column that differs between identical runs."""
    return [{key: value for key, value in record.items() if key != "seconds"}
            for record in history]
