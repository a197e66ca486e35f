"""Config: specs are strict and frozen, files load safely, errors carry every bad path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import jsonschema
import pydantic
import pytest

import optiplug


class ToySpec(optiplug.OptimizerSpec):
    """A toy optimizer with the usual kinds of hyperparameters."""

    name: Literal["toy"] = "toy"
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Moment decay rates."""
    eps: optiplug.PositiveFloat = 1e-8
    """Denominator guard."""
    milestones: tuple[optiplug.PositiveInt, ...] = ()
    """Some counts."""
    amsgrad: bool = False
    """A switch."""


def build_toy(spec: ToySpec, params: object = None) -> tuple[ToySpec, object]:
    return spec, params


TOY = optiplug.Technique(kind="optimizer", name="toy", spec=ToySpec,
                         builders={"numpy": build_toy}, summary="A toy optimizer.")


@pytest.fixture
def registry(fresh_registry) -> optiplug.Registry:
    registry = fresh_registry()
    registry.register(TOY)
    return registry


def test_spec_is_frozen_strict_and_rejects_unknown_keys():
    spec = ToySpec(lr=0.1, betas=[0.8, 0.9], milestones=[1, 2])
    assert spec.betas == (0.8, 0.9) and spec.milestones == (1, 2)
    with pytest.raises(pydantic.ValidationError):
        spec.lr = 1.0  # type: ignore[misc]
    for bad in ({"lr": "0.1"}, {"lr": True}, {"amsgrad": 1}, {"lr": float("nan")},
                {"lr": float("inf")}, {"lr": 0.0}, {"betas": (0.9, 1.0)}, {"unknown": 1},
                {"milestones": (0,)}):
        with pytest.raises(pydantic.ValidationError):
            ToySpec(**bad)  # type: ignore[arg-type]


def test_model_dump_builds_the_same_spec_again(registry):
    spec = optiplug.to_spec({"kind": "optimizer", "name": "toy", "lr": 0.3, "betas": [0.5, 0.6]},
                            registry=registry)
    assert type(spec)(**spec.model_dump()) == spec
    assert optiplug.to_spec(spec.model_dump(), registry=registry) == spec
    assert optiplug.to_spec(json.loads(spec.model_dump_json()), registry=registry) == spec
    rebuilt, _ = optiplug.build(spec.model_dump(), registry=registry)
    assert rebuilt == spec
    # param_groups, the grouping and clipping fields and nonfinite: every optimizer spec has
    # them from optiplug.OptimizerSpec.
    assert spec.hyperparameters() == {"lr": 0.3, "betas": (0.5, 0.6), "eps": 1e-8,
                                      "milestones": (), "amsgrad": False, "param_groups": (),
                                      "decay_bias_and_norm": False, "layer_decay": None,
                                      "layer_patterns": (), "clip_grad_norm": None,
                                      "clip_grad_norm_type": 2.0, "clip_grad_value": None,
                                      "nonfinite": "ignore"}


def test_every_bad_path_is_reported_in_one_config_error(registry):
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.build({"kind": "optimizer", "name": "toy", "lr": -1, "betas": [0.9, 1.5],
                        "momentum": 0.9}, registry=registry)
    error = info.value
    assert isinstance(error, ValueError)
    paths = {issue.path: issue.message for issue in error.issues}
    assert set(paths) == {"lr", "betas.1", "momentum"}
    assert "greater than 0" in paths["lr"] and "(got -1)" in paths["lr"]
    assert "unknown key" in paths["momentum"]


def test_kind_is_implied_by_the_section_and_paths_are_prefixed(registry, tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("optimizer:\n  name: toy\n  betas: [0.9, 2]\nscheduler:\n  name: nope\n"
                    "optimiser: {}\n", encoding="utf-8")
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.validate_config(path, registry=registry)
    paths = [issue.path for issue in info.value.issues]
    assert paths == ["optimizer.betas.1", "scheduler.name", "optimiser"]
    assert "did you mean 'optimizer'" in str(info.value)
    assert info.value.source == str(path)


@pytest.mark.parametrize(("suffix", "text"), [
    (".yaml", "kind: optimizer\nname: toy\nlr: 0.25\nbetas: [0.5, 0.25]\n"),
    (".yml", "optimizer:\n  name: toy\n  lr: 0.25\n  betas: [0.5, 0.25]\n"),
    (".toml", 'kind = "optimizer"\nname = "toy"\nlr = 0.25\nbetas = [0.5, 0.25]\n'),
    (".json", '{"optimizer": {"name": "toy", "lr": 0.25, "betas": [0.5, 0.25]}}'),
])
def test_build_from_yaml_toml_and_json_files(registry, tmp_path: Path, suffix, text):
    path = tmp_path / f"config{suffix}"
    path.write_text(text, encoding="utf-8")
    spec, params = optiplug.build(path, registry=registry, params="P")
    assert (spec.lr, spec.betas, params) == (0.25, (0.5, 0.25), "P")


def test_unknown_technique_name_suggests_close_matches(registry):
    with pytest.raises(optiplug.ConfigError, match="did you mean 'toy'") as info:
        optiplug.build({"kind": "optimizer", "name": "tyo"}, registry=registry)
    assert info.value.issues[0].path == "name"
    with pytest.raises(optiplug.ConfigError, match="kind: missing"):
        optiplug.to_spec({"name": "toy"}, registry=registry)


@pytest.mark.parametrize("name", ["os.system", "builtins.__import__", "__import__('os')",
                                  "optiplug.plugins.activations.relu:NumpyReLU",
                                  "subprocess.Popen"])
def test_a_config_cannot_name_anything_but_a_registered_technique(registry, name):
    with pytest.raises(optiplug.ConfigError, match="unknown optimizer"):
        optiplug.build({"kind": "optimizer", "name": name}, registry=registry)
    with pytest.raises(optiplug.ConfigError, match="_target_"):
        optiplug.build({"kind": "optimizer", "name": "toy", "_target_": name},
                       registry=registry)


@pytest.mark.parametrize(("suffix", "text", "message"), [
    (".yaml", "kind: optimizer\nname: !!python/object/apply:os.system ['true']\n",
     "malformed YAML"),
    (".yaml", "kind: optimizer\nname: toy\nname: toy\n", "duplicate key 'name'"),
    (".json", '{"kind": "optimizer", "name": "toy", "name": "toy"}', "duplicate key 'name'"),
    (".json", '{"kind": "optimizer", "lr": NaN}', "NaN is not valid JSON"),
    (".toml", 'kind = "optimizer"\nkind = "x"\n', "malformed TOML"),
    (".yaml", "kind: [optimizer\n", "malformed YAML"),
    (".yaml", "- 1\n- 2\n", "top level must be a mapping"),
    (".ini", "x", "unsupported config file type"),
])
def test_malformed_files_give_one_clear_config_error(registry, tmp_path: Path, suffix, text,
                                                     message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(optiplug.ConfigError, match=message) as info:
        optiplug.build(path, registry=registry)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_config_error(registry, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(optiplug.ConfigError, match="not UTF-8"):
        optiplug.build(path, registry=registry)


def test_json_schema_accepts_valid_and_rejects_invalid_configs(registry):
    schema = optiplug.json_schema(registry=registry)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"optimizer": {"name": "toy", "lr": 0.1, "betas": [0.9, 0.9]}})
    assert validator.is_valid({"activation": {"name": "relu"}})
    assert not validator.is_valid({"optimizer": {"name": "toy", "betas": [0.9, 1.0]}})
    assert not validator.is_valid({"optimizer": {"name": "toy", "momentum": 0.9}})
    assert not validator.is_valid({"optimizer": {"name": "nope"}})
    one_kind = optiplug.json_schema("optimizer", registry=registry)
    assert jsonschema.Draft202012Validator(one_kind).is_valid({"name": "toy", "lr": 1.0})
    assert not jsonschema.Draft202012Validator(one_kind).is_valid({"name": "toy", "lr": 0})
    assert one_kind["$defs"]["ToySpec"]["properties"]["eps"]["description"] == "Denominator guard."


def test_spec_api_validates_keyword_hyperparameters():
    spec = optiplug.spec("activation", "relu")
    assert spec.model_dump() == {"kind": "activation", "name": "relu"}
    with pytest.raises(optiplug.ConfigError, match="slope: unknown key"):
        optiplug.spec("activation", "relu", slope=0.1)


def test_every_float_hyperparameter_is_finite_by_default():
    class PlainFloatSpec(optiplug.ActivationSpec):
        name: Literal["plain"] = "plain"
        alpha: float = 1.0

    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(pydantic.ValidationError, match="finite number"):
            PlainFloatSpec(alpha=bad)
