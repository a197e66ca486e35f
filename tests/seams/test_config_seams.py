"""Config seams: numbers as people write them, sectioned files, overrides, OmegaConf, bounds.

Each test goes through the public API (``optiplug.load_config``, ``optiplug.build``,
``optiplug.validate_config``) and checks numbers against a reference: Python's own number
grammar, torch.optim, or a formula.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.config import apply_overrides, parse_yaml_value

# Every way a person writes a number, and Python's own reading of it (the reference).
NUMBER_FORMS = ["1e-3", "5E-4", ".5", "1_000", "+1e3", "-2.5e-4", "0.001", "3", "1.", "2.5E+2"]
# The forms each format's grammar allows (TOML and JSON are standards: `.5` is not TOML).
TOML_FORMS = ["1e-3", "5E-4", "1_000", "+1e3", "-2.5e-4", "0.001", "3", "2.5E+2"]
JSON_FORMS = ["1e-3", "5E-4", "-2.5e-4", "0.001", "3", "2.5E+2"]


def _expected(form: str) -> int | float:
    value = ast.literal_eval(form)
    assert isinstance(value, int | float)
    return value


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("form", NUMBER_FORMS)
def test_yaml_reads_every_written_number_as_python_does(tmp_path: Path, form: str) -> None:
    data = optiplug.load_config(_write(tmp_path, "n.yaml", f"value: {form}\nlist: [{form}]\n"))
    expected = _expected(form)
    assert data["value"] == expected and type(data["value"]) is type(expected)
    assert data["list"] == [expected]
    assert parse_yaml_value(form) == expected


@pytest.mark.parametrize("form", TOML_FORMS)
def test_toml_reads_every_number_its_grammar_allows(tmp_path: Path, form: str) -> None:
    data = optiplug.load_config(_write(tmp_path, "n.toml", f"value = {form}\n"))
    assert data["value"] == _expected(form)
    assert type(data["value"]) is type(_expected(form))


@pytest.mark.parametrize("form", JSON_FORMS)
def test_json_reads_every_number_its_grammar_allows(tmp_path: Path, form: str) -> None:
    data = optiplug.load_config(_write(tmp_path, "n.json", f'{{"value": {form}}}'))
    assert data["value"] == _expected(form)


@pytest.mark.parametrize(("suffix", "text"), [
    (".json", '{"value": .5}'), (".json", '{"value": 1_000}'), (".json", '{"value": +1e3}'),
    (".toml", "value = .5\n")])
def test_a_number_outside_the_formats_grammar_is_a_clear_config_error(
        tmp_path: Path, suffix: str, text: str) -> None:
    path = _write(tmp_path, f"n{suffix}", text)
    with pytest.raises(optiplug.ConfigError, match=f"malformed {suffix[1:].upper()}"):
        optiplug.load_config(path)


@pytest.mark.parametrize("form", NUMBER_FORMS)
@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoted_numbers_stay_strings_in_yaml(tmp_path: Path, form: str, quote: str) -> None:
    data = optiplug.load_config(_write(tmp_path, "s.yaml", f"value: {quote}{form}{quote}\n"))
    assert data["value"] == form
    toml = optiplug.load_config(_write(tmp_path, "s.toml", f'value = "{form}"\n'))
    assert toml["value"] == form
    assert optiplug.load_config(_write(tmp_path, "s.json", json.dumps({"value": form})))[
        "value"] == form


def test_yaml_follows_yaml_1_2_for_booleans_and_leading_zeros(tmp_path: Path) -> None:
    data = optiplug.load_config(_write(tmp_path, "b.yaml", (
        "a: true\nb: False\nc: yes\nd: off\ne: 0123\nf: 0x1F\ng: 1:30\nh: .inf\ni: ~\n")))
    assert data == {"a": True, "b": False, "c": "yes", "d": "off", "e": 123, "f": 31,
                    "g": "1:30", "h": float("inf"), "i": None}


TEMPLATES = {".yaml": ("optimizer:\n  name: sgd\n  lr: {form}\n", NUMBER_FORMS),
             ".toml": ("[optimizer]\nname = \"sgd\"\nlr = {form}\n", TOML_FORMS),
             ".json": ('{{"optimizer": {{"name": "sgd", "lr": {form}}}}}', JSON_FORMS)}
POSITIVE_CASES = [(suffix, template, form) for suffix, (template, forms) in TEMPLATES.items()
                  for form in forms if not form.startswith("-")]


@pytest.mark.parametrize(("suffix", "template", "form"), POSITIVE_CASES)
def test_build_steps_by_the_written_learning_rate(tmp_path: Path, suffix: str, template: str,
                                                  form: str) -> None:
    path = _write(tmp_path, f"opt{suffix}", template.format(form=form))
    params = {"w": np.ones(3)}
    opt = optiplug.build(path, params=params)
    opt.step({"w": np.full(3, 2.0)})
    np.testing.assert_allclose(params["w"], 1.0 - _expected(form) * 2.0, rtol=1e-15)


def test_a_quoted_learning_rate_is_refused_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "opt.yaml", "optimizer:\n  name: sgd\n  lr: '1e-3'\n")
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.build(path, params={"w": np.ones(2)})
    assert [issue.path for issue in info.value.issues] == ["optimizer.lr"]
    assert "valid number" in str(info.value)


@pytest.mark.parametrize("form", NUMBER_FORMS)
def test_vary_items_read_numbers_by_the_same_rules(form: str) -> None:
    from optiplug.training.compare import parse_vary

    kind, items = parse_vary(f"optimizer=adam(lr={form}, betas=[0.9, {form}]),sgd")
    assert kind == "optimizer"
    entry = items[0][1]
    assert entry is not None
    assert entry["lr"] == _expected(form) and entry["betas"] == [0.9, _expected(form)]
    quoted = parse_vary(f"optimizer=adam(lr='{form}')")[1][0][1]
    assert quoted is not None and quoted["lr"] == form


# ------------------------------------------------------------------------- sectioned files
TRAIN_YAML = """\
optimizer:
  name: adamw
  lr: 1e-2
  weight_decay: 0.05
  param_groups:
    - {role: bias, weight_decay: 0.0}
scheduler:
  name: cosine
  T_max: 10
"""


def test_a_sectioned_file_builds_an_optimizer_and_its_scheduler_like_torch(
        tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = _write(tmp_path, "train.yaml", TRAIN_YAML)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(),
                                    torch.nn.Linear(3, 2))
    reference.load_state_dict(model.state_dict())
    built = optiplug.build(path, params=model)
    assert isinstance(built, optiplug.Built)
    assert built.scheduler.optimizer is built.optimizer
    assert [(s.kind, s.name) for s in built.specs] == [("optimizer", "adamw"),
                                                       ("scheduler", "cosine")]
    assert built.spec("scheduler") is built.specs[1]
    decay = [p for n, p in reference.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in reference.named_parameters() if n.endswith("bias")]
    ref_opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-2, weight_decay=0.05)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=10)
    x = torch.randn(16, 4)
    for _ in range(6):
        for net, opt, sched in ((model, built.optimizer, built.scheduler),
                                (reference, ref_opt, ref_sched)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
            sched.step()
        assert built.optimizer.param_groups[0]["lr"] == pytest.approx(
            ref_opt.param_groups[0]["lr"], rel=1e-12)
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_a_sectioned_file_builds_on_numpy_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "train.yaml",
                  "optimizer: {name: sgd, lr: 0.5}\nscheduler: {name: step, step_size: 1, "
                  "gamma: 0.5}\n")
    params = {"w": np.ones(2)}
    built = optiplug.build(path, params=params)
    for _ in range(3):
        built.optimizer.step({"w": np.ones(2)})
        built.scheduler.step()
    # lr 0.5, 0.25, 0.125: w = 1 - 0.875
    np.testing.assert_allclose(params["w"], 1 - 0.875, rtol=1e-15)


@pytest.mark.parametrize(("config", "runtime", "path", "phrase"), [
    ({"optimizer": {"name": "sgd"}, "scheduler": {"name": "step", "step_size": 1}}, {},
     "params", "needs params"),
    ({"scheduler": {"name": "step", "step_size": 1}, "activation": {"name": "relu"}},
     {"params": {"w": np.ones(1)}}, "optimizer", "add an optimizer section"),
    ({"optimizer": {"name": "sgd"}, "scheduler": {"name": "step", "step_size": 1}},
     {"params": {"w": np.ones(1)}, "paramz": 1}, "paramz", "unknown keyword 'paramz'"),
    ({"optimizer": {"name": "sgd", "nesterov": True}, "scheduler": {"name": "step",
                                                                     "step_size": 1}},
     {"params": {"w": np.ones(1)}}, "optimizer.nesterov", "momentum > 0"),
])
def test_a_sectioned_config_that_cannot_build_names_the_fix(config: dict[str, Any],
                                                            runtime: dict[str, Any], path: str,
                                                            phrase: str) -> None:
    with pytest.raises(optiplug.ConfigError, match=phrase) as info:
        optiplug.build(config, **runtime)
    assert info.value.issues[0].path == path


# ------------------------------------------------------------------------------ API seams
def test_an_unknown_build_keyword_is_a_config_error_naming_the_accepted_ones() -> None:
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.build({"kind": "optimizer", "name": "adam"}, parms={"w": np.ones(2)})
    text = str(info.value)
    assert "unknown keyword 'parms'" in text and "it takes: backend, params, registry" in text
    assert info.value.issues[0].path == "parms"
    with pytest.raises(optiplug.ConfigError, match="needs params="):
        optiplug.build({"kind": "optimizer", "name": "adam"})


def test_a_misspelt_hyperparameter_gets_the_closest_name() -> None:
    with pytest.raises(optiplug.ConfigError, match="did you mean 'weight_decay'") as info:
        optiplug.optimizer("adamw", {"w": np.ones(2)}, wieght_decay=0.1)
    assert info.value.issues[0].path == "wieght_decay"
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.validate_config({"optimizer": {"name": "adamw", "param_groups": [
            {"role": "bias", "wieght_decay": 0.0}]}})
    assert info.value.issues[0].path == "optimizer.param_groups.0.wieght_decay"
    assert "did you mean 'weight_decay'" in str(info.value)


def test_param_groups_result_is_accepted_as_is_on_numpy() -> None:
    rules = [{"match": "b", "weight_decay": 0.0}]
    params = {"w": np.ones(3), "b": np.ones(2)}
    opt = optiplug.optimizer("adamw", optiplug.param_groups(params, rules, lr=1e-1,
                                                            weight_decay=0.5), lr=1e-1,
                             weight_decay=0.5)
    opt.step({"w": np.zeros(3), "b": np.zeros(2)})
    # A zero gradient moves only by decoupled weight decay: p *= 1 - lr * wd.
    np.testing.assert_allclose(params["w"], 1 - 0.1 * 0.5, rtol=1e-15)
    np.testing.assert_allclose(params["b"], 1.0, rtol=0)


def test_param_groups_result_is_accepted_as_is_on_torch() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    groups = optiplug.param_groups(model, [{"role": "bias", "weight_decay": 0.0}], lr=1e-2)
    opt = optiplug.optimizer("adamw", groups, lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([{"params": [reference.weight]},
                             {"params": [reference.bias], "weight_decay": 0.0}],
                            lr=1e-2, weight_decay=0.1)
    x = torch.randn(8, 3)
    for _ in range(4):
        for net, o in ((model, opt), (reference, ref)):
            o.zero_grad()
            net(x).square().sum().backward()
            o.step()
    torch.testing.assert_close(model.weight, reference.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.bias, reference.bias, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------ overrides
def test_overrides_set_dotted_paths_with_the_number_rules() -> None:
    base = {"optimizer": {"name": "adam", "lr": 0.1}, "model": {"layers": [{"units": 8}]}}
    result = apply_overrides(base, ["optimizer.lr=3e-4", "train.epochs=5",
                                    "model.layers.0.units=1_024", "optimizer.betas=[.5, 0.9]",
                                    "optimizer.name='1e-3'"])
    assert result == {"optimizer": {"name": "1e-3", "lr": 3e-4, "betas": [0.5, 0.9]},
                      "model": {"layers": [{"units": 1024}]}, "train": {"epochs": 5}}
    assert base["optimizer"]["lr"] == 0.1  # the input is not changed


@pytest.mark.parametrize(("override", "path", "phrase"), [
    ("model.layers.3.units=1", "model.layers.3.units", "out of range"),
    ("optimizer.name.x=1", "optimizer.name.x", "not a mapping"),
    ("model.layers.first=1", "model.layers.first", "index it by number"),
    ("optimizer.lr", "", "expected dotted.path=value"),
    ("optimizer.lr=[1, 2", "optimizer.lr", "malformed YAML"),
])
def test_a_bad_override_names_its_path(override: str, path: str, phrase: str) -> None:
    base = {"optimizer": {"name": "adam"}, "model": {"layers": [{"units": 8}]}}
    with pytest.raises(optiplug.ConfigError, match=phrase) as info:
        apply_overrides(base, [override])
    assert info.value.issues[0].path == path


# ------------------------------------------------------------------------------- OmegaConf
def test_build_accepts_an_omegaconf_dictconfig_with_interpolations() -> None:
    import omegaconf  # the dev extra installs it: never skipped
    cfg = omegaconf.OmegaConf.create({
        "base_lr": 0.25,
        "optimizer": {"name": "sgd", "lr": "${base_lr}", "momentum": 0.5},
        "scheduler": {"name": "step", "step_size": 1, "gamma": "${optimizer.momentum}"},
    })
    params = {"w": np.ones(1)}
    opt = optiplug.build(cfg.optimizer, params=params)  # kind from the node's key
    opt.step({"w": np.ones(1)})
    opt.step({"w": np.ones(1)})
    # momentum 0.5: buffers 1, 1.5; steps 0.25 * (1 + 1.5)
    np.testing.assert_allclose(params["w"], 1 - 0.25 * 2.5, rtol=1e-15)
    sectioned = omegaconf.OmegaConf.create({
        "optimizer": {"name": "sgd", "lr": 0.25},
        "scheduler": {"name": "step", "step_size": 1, "gamma": "${optimizer.lr}"}})
    built = optiplug.build(sectioned, params={"w": np.ones(1)})
    built.scheduler.step()
    assert built.optimizer.param_groups[0]["lr"] == pytest.approx(0.25 * 0.25, rel=1e-15)
    spec = optiplug.to_spec(omegaconf.OmegaConf.create(
        {"kind": "optimizer", "name": "adamw", "lr": 0.01, "weight_decay": "${lr}"}))
    assert (spec.lr, spec.weight_decay) == (0.01, 0.01)


def test_an_unresolvable_interpolation_is_a_config_error_with_its_path() -> None:
    import omegaconf  # the dev extra installs it: never skipped
    cfg = omegaconf.OmegaConf.create({"optimizer": {"name": "sgd", "lr": "${nope}"}})
    with pytest.raises(optiplug.ConfigError, match="nope") as info:
        optiplug.build(cfg, params={"w": np.ones(1)})
    assert info.value.issues[0].path == "optimizer.lr"
    missing = omegaconf.OmegaConf.create({"kind": "optimizer", "name": "sgd", "lr": "???"})
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.to_spec(missing)
    assert info.value.issues[0].path == "lr"


def test_import_optiplug_does_not_import_omegaconf() -> None:
    script = "import sys, optiplug; print('omegaconf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------- bounds
# Run from a fresh interpreter: a process forked from pytest inherits pytest's peak memory in
# ru_maxrss, so the command is run one level further down and read from RUSAGE_CHILDREN.
MEMORY_PROBE = textwrap.dedent("""\
    import resource, subprocess, sys
    done = subprocess.run([sys.executable, "-m", "optiplug", *sys.argv[1:]],
                          capture_output=True, text=True, timeout=120)
    sys.stderr.write(done.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"exit={done.returncode} peak_mb={peak_mb:.0f}")
""")


def _peak(*args: str) -> tuple[int, float, str]:
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *args], capture_output=True,
                            text=True, timeout=180, check=True)
    code, peak = result.stdout.split()
    return int(code.split("=")[1]), float(peak.split("=")[1]), result.stderr


def test_an_alias_bomb_of_one_long_string_fails_fast_in_bounded_memory(tmp_path: Path) -> None:
    long = "x" * 200_000
    aliases = ", ".join(["*a"] * 50_000)
    path = _write(tmp_path, "bomb.yaml",
                  f'a: &a "{long}"\noptimizer: {{name: adam, betas: [{aliases}]}}\n')
    assert 350_000 < path.stat().st_size < 1024 * 1024
    with pytest.raises(optiplug.ConfigError, match="characters once its YAML aliases"):
        optiplug.load_config(path)
    code, peak, err = _peak("validate", str(path))
    assert code == 1, err
    assert err.count("\n") == 1 and len(err) < 400, err
    assert "characters once its YAML aliases are expanded" in err
    _, baseline, _ = _peak("--version")
    assert peak < 300, f"peak {peak:.0f} MB (an interpreter with optiplug: {baseline:.0f} MB)"


def test_error_messages_quote_a_bounded_excerpt_of_a_huge_value(tmp_path: Path) -> None:
    long = "y" * 300_000
    path = _write(tmp_path, "huge.yaml", f'a: &a "{long}"\noptimizer: {{name: adam, lr: *a, '
                                         f'betas: [*a, *a, *a]}}\n')
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.validate_config(path)
    assert {issue.path for issue in info.value.issues} >= {"optimizer.lr"}
    for issue in info.value.issues:
        assert len(issue.message) < 200, issue.message


SECRET = "sk_live_Zq8LmN3pV7rT2wX9bK4hJ6fD1sA5gC0e"


@pytest.mark.parametrize("text", [
    f"{SECRET}: x: y\n",
    f"{SECRET}: [unclosed, {SECRET}\n",
    f"key: {SECRET} [\n: bad\n",
    f"\t{SECRET}\n",
    f"a: *{SECRET}\n",
    f"a: !{SECRET} 1\n",
    f"- {SECRET}\nkey: 1\n",
    f"{SECRET}: !!python/name:os.system\n",
])
def test_a_yaml_error_quotes_no_more_than_a_short_excerpt_of_a_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    from optiplug.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text(text, encoding="utf-8")
    link = tmp_path / "config.yaml"
    link.symlink_to(secret)
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.load_config(link)
    assert main(["validate", str(link)]) == 1
    shown = str(info.value) + "\n" + capsys.readouterr().err
    assert "malformed YAML" in shown
    for start in range(len(SECRET) - 11):
        assert SECRET[start:start + 12] not in shown, shown
    assert all(len(line) < 300 for line in shown.splitlines())


# ---------------------------------------------------------------------------------- recipes
def test_validate_config_reads_a_recipe_as_the_training_loop_does() -> None:
    from optiplug.training.recipe import load_recipe, technique_entries

    path = Path(__file__).resolve().parents[2] / "examples" / "recipes" / "moons.yaml"
    specs = optiplug.validate_config(path)
    assert specs == [spec for _, spec in technique_entries(load_recipe(path))]
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.validate_config({"model": {"layers": []}, "optimizer": "adam",
                                  "train": {"epoch": 3}})
    assert {issue.path for issue in info.value.issues} >= {"train.epoch"}


def test_an_override_reaches_into_a_technique_given_by_name() -> None:
    from optiplug.training.recipe import DEFAULT_RECIPE, load_recipe

    recipe = load_recipe(DEFAULT_RECIPE | {"optimizer": "adam"},
                         ["optimizer.lr=3e-4", "train.epochs=5"])
    assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.train.epochs) == (
        "adam", 3e-4, 5)
    with pytest.raises(optiplug.ConfigError) as info:
        load_recipe(None, ["optimizer.lr=-1e-3"])
    assert [issue.path for issue in info.value.issues] == ["optimizer.lr"]


def test_what_optiplug_writes_as_yaml_reads_back_the_same() -> None:
    import yaml

    from optiplug.config import yaml_dumper

    data = {"name": "1e3", "match": "1_000", "pattern": ".5", "word": "yes", "flag": True,
            "lr": 1e-5, "big": 1e300, "ints": [0, -3, 1_000], "inf": float("-inf"),
            "none": None, "text": "true", "date_like": "2024-01-01"}
    text = yaml.dump(data, Dumper=yaml_dumper(), sort_keys=False)
    assert parse_yaml_value(text) == data
