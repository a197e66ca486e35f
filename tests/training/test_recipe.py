"""Recipe validation: one ConfigError with every bad path, file formats, resolution."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import optiplug
from optiplug.training.recipe import (
    DEFAULT_RECIPE,
    fingerprint,
    load_recipe,
    parse_recipe,
    recipe_to_dict,
    with_technique,
)

from .conftest import small_recipe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"


def test_default_recipe_is_the_shipped_digits_example() -> None:
    assert load_recipe(EXAMPLES / "digits.yaml") == load_recipe()


@pytest.mark.parametrize("name", ["digits.yaml", "moons.yaml", "regression.toml"])
def test_example_recipes_validate(name: str) -> None:
    recipe = load_recipe(EXAMPLES / name)
    assert recipe.name == Path(name).stem


def test_resolved_recipe_round_trips_through_yaml_json_and_toml(tmp_path: Path) -> None:
    import yaml

    recipe = load_recipe(EXAMPLES / "moons.yaml")
    plain = recipe_to_dict(recipe)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(plain), encoding="utf-8")
    (tmp_path / "r.json").write_text(json.dumps(plain), encoding="utf-8")
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert load_recipe(tmp_path / "r.json") == recipe
    assert parse_recipe(plain) == recipe


def test_every_bad_path_is_reported_in_one_error() -> None:
    bad = copy.deepcopy(DEFAULT_RECIPE)
    bad["optimizer"] = {"name": "adam", "lr": -1.0, "betas": [0.9, 2.0]}
    bad["model"]["layers"] = [{"units": 0, "initializer": "he_normal",
                               "activation": {"name": "rleu"}}]
    bad["data"]["dataset"] = "mnist"
    bad["train"]["batch_size"] = "half"
    bad["scheduler"] = {"name": "cosine", "T_max": "ten"}
    bad["extra"] = 1
    with pytest.raises(optiplug.ConfigError) as caught:
        parse_recipe(bad)
    paths = {issue.path for issue in caught.value.issues}
    assert paths == {"optimizer.lr", "optimizer.betas.1", "model.layers.0.units",
                     "model.layers.0.activation.name", "data.dataset", "train.batch_size",
                     "scheduler.T_max", "extra"}
    message = {issue.path: issue.message for issue in caught.value.issues}
    assert "did you mean 'relu'" in message["model.layers.0.activation.name"]


def test_missing_sections_and_kind_mismatch_are_paths() -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        parse_recipe({"model": {"layers": [{"units": 4}]},
                      "optimizer": {"kind": "scheduler", "name": "cosine"}})
    paths = {issue.path for issue in caught.value.issues}
    assert paths == {"optimizer.kind", "model.layers.0.initializer",
                     "model.layers.0.activation"}


def test_a_technique_may_be_given_by_name_alone() -> None:
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe["optimizer"] = "adam"
    recipe["model"]["layers"][0]["activation"] = "tanh"
    parsed = parse_recipe(recipe)
    assert parsed.optimizer == optiplug.spec("optimizer", "adam")
    assert parsed.model.layers[0].activation == optiplug.spec("activation", "tanh")


def test_recipe_param_group_rules_are_appended_to_the_optimizer() -> None:
    recipe = small_recipe()
    recipe["optimizer"] = {"name": "adamw", "weight_decay": 0.1}
    recipe["param_groups"] = [{"role": "bias", "weight_decay": 0.0}]
    spec = parse_recipe(recipe).optimizer_spec()
    assert [rule.role for rule in spec.param_groups] == ["bias"]

    recipe["param_groups"] = [{"role": "bias"}]
    with pytest.raises(optiplug.ConfigError) as caught:
        parse_recipe(recipe)
    assert [issue.path for issue in caught.value.issues] == ["param_groups.0"]


def test_a_rule_matching_no_parameter_fails_when_the_model_is_built() -> None:
    from optiplug.training.loop import Trainer

    recipe = small_recipe()
    recipe["param_groups"] = [{"match": "encoder.*", "lr": 0.1}]
    with pytest.raises(optiplug.ConfigError) as caught:
        Trainer(parse_recipe(recipe))
    assert caught.value.issues[0].path.startswith("optimizer.param_groups")
    assert "layers.0.linear.weight" in caught.value.issues[0].message


def test_fingerprint_ignores_epochs_but_not_the_model() -> None:
    base = parse_recipe(small_recipe())
    longer = parse_recipe(small_recipe(epochs=50))
    wider = small_recipe()
    wider["model"]["layers"][0]["units"] = 33
    assert fingerprint(base) == fingerprint(longer)
    assert fingerprint(base) != fingerprint(parse_recipe(wider))


def test_with_technique_puts_an_initializer_on_every_layer() -> None:
    recipe = small_recipe()
    recipe["model"]["layers"].append(copy.deepcopy(recipe["model"]["layers"][0]))
    varied = with_technique(parse_recipe(recipe), "initializer", {"name": "orthogonal"})
    expected = optiplug.spec("initializer", "orthogonal")
    assert [layer.initializer for layer in varied.model.layers] == [expected, expected]
    assert varied.model.output_initializer == expected
