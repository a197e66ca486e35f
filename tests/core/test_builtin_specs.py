"""Every installed spec honours the spec contract: frozen, strict, described, discriminated."""

from __future__ import annotations

import pytest

import optiplug
from optiplug.specs import spec_base

TECHNIQUES = optiplug.registry().techniques()


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: f"{t.kind}.{t.name}")
def test_spec_is_frozen_forbids_extra_keys_and_subclasses_its_kind_base(technique):
    spec = technique.spec
    assert issubclass(spec, spec_base(technique.kind))
    assert spec.model_config["frozen"] is True
    assert spec.model_config["extra"] == "forbid"
    assert spec.technique_name() == technique.name
    assert spec.model_fields["kind"].default == technique.kind


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: f"{t.kind}.{t.name}")
def test_every_hyperparameter_and_nested_field_is_described(technique):
    schema = technique.spec.model_json_schema()
    models = {"": schema, **schema.get("$defs", {})}
    undescribed = [f"{model or technique.spec.__name__}.{field}"
                   for model, body in models.items()
                   for field, prop in body.get("properties", {}).items()
                   if field not in ("kind", "name") and not prop.get("description")]
    assert undescribed == []
