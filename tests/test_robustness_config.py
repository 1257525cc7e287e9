"""Every bad value of every run-config key is refused when the config is loaded, naming the key.

A table-driven fuzz over the schema: for each field of each section the bad values follow from its
type and bounds (booleans for numbers, 1e1 for integers, NaN / inf, text, out-of-range values,
unknown choices), written both as a TOML file and as a --set override, the way users give them."""

import math
import typing

import pytest
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import AdvantageConfig, ConfigError, EvaluationConfig, FusionConfig, GRPOConfig, PolicyConfig, load_config

runner = CliRunner()
SECTIONS = {"grpo": GRPOConfig, "grpo.advantage": AdvantageConfig, "policy": PolicyConfig,
            "evaluation": EvaluationConfig, "fusion": FusionConfig}


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def _base(ann):
    """The scalar type behind Annotated / Optional, and whether None is allowed."""
    args = typing.get_args(ann)
    if typing.get_origin(ann) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _base(inner[0])[0], True
    if typing.get_origin(ann) is typing.Annotated:
        return _base(args[0])
    return ann, False


def _bad_values(info):
    ann, _ = _base(info.annotation)
    origin = typing.get_origin(ann)
    bounds = {type(m): m for m in info.metadata}
    bad = []
    if ann is int:
        bad += [True, 1.5, 1e1, "3", math.inf]
    elif ann is float:
        bad += [True, "0.1", math.nan, math.inf, -math.inf, 1e400 if False else 10**400]
    elif ann is bool:
        bad += [1, "yes", 0.0]
    elif ann is str:
        bad += [1, 2.5, True]
    elif origin is typing.Literal:
        bad += ["no_such_choice", 1, True]
    elif origin is list:
        bad += ["not a list", 3, ["no_such_item"] if typing.get_origin(typing.get_args(ann)[0]) is typing.Literal
                else [math.nan]]
        if MinLen in bounds:
            bad.append([])
    elif origin is dict:
        bad += ["not a table", {"k": math.inf}, {"k": True}]
    if ann in (int, float):
        if Ge in bounds:
            bad.append(bounds[Ge].ge - 1)
        if Gt in bounds:
            bad.append(bounds[Gt].gt)
        if Le in bounds:
            bad.append(bounds[Le].le * 10 + 1 if bounds[Le].le > 0 else 1)
        if Lt in bounds:
            bad.append(bounds[Lt].lt)
    return bad


CASES = [(section, name, v) for section, model in SECTIONS.items() for name, info in model.model_fields.items()
         if name != "advantage" for v in _bad_values(info)]


def test_the_table_covers_every_field():
    covered = {(s, n) for s, n, _ in CASES}
    every = {(s, n) for s, m in SECTIONS.items() for n in m.model_fields if n != "advantage"}
    assert covered == every, every - covered
    assert len(CASES) > 150


def _toml_file(section, name, value):
    if section == "grpo.advantage":
        return f"[grpo.advantage]\n{name} = {_toml(value)}\n"
    if isinstance(value, dict):
        return f"[{section}.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in value.items())
    return f"[{section}]\n{name} = {_toml(value)}\n"


@pytest.mark.parametrize("section, name, value", CASES, ids=[f"{s}.{n}={v!r}" for s, n, v in CASES])
def test_bad_value_refused_at_load_naming_the_key(tmp_path, section, name, value):
    path = tmp_path / "run.toml"
    path.write_text(_toml_file(section, name, value))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{section}.{name}" in str(err.value), str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("grpo.lr=inf", "grpo.lr: must be finite"),
    ("grpo.lr=1e30", "grpo.lr"),
    ("grpo.clip_high=inf", "grpo.clip_high"),
    ("grpo.max_grad_norm=inf", "grpo.max_grad_norm"),
    ("grpo.batch_size=true", "grpo.batch_size: must be an integer"),
    ("grpo.steps=1e1", "grpo.steps: must be an integer"),
    ("grpo.seed=1e20", "grpo.seed"),
    ("grpo.seed=100000000000000000000", "grpo.seed"),
    ("policy.hidden=[]", "policy.hidden"),
    ("policy.head_params.bogus=1", "policy.head_params: unknown parameter ['bogus'] for the categorical head"),
    ("grpo.reward_weights.nosuch=2", "grpo.reward_weights: unknown component ['nosuch']"),
    ('grpo.device="cuda:abc"', "grpo.device"),
])
def test_issue_cases_through_the_cli(override, fragment, tmp_path):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--set", override])
    assert r.exit_code == 2 and r.output.startswith("error:"), r.output
    assert fragment in r.output.replace("\n", ""), r.output
    assert not (tmp_path / "run").exists()


def test_known_names_are_listed():
    with pytest.raises(ConfigError, match=r"its reward components are \['peer_effect', 'profit'\]"):
        load_config(None, ["scenario.name=marketing", "grpo.reward_weights.proft=1"])
    with pytest.raises(ConfigError, match=r"it takes \[.*'target_spread'.*\]"):
        load_config(None, ["scenario.name=allocation", "policy.head_params.target_sprd=0.1"])
    cfg = load_config(None, ["scenario.name=search", "grpo.reward_weights.prior=0.5", "policy.head_params.concentration=5.0"])
    assert cfg.grpo.reward_weights == {"prior": 0.5}
    cfg = load_config(None, ["grpo.budget=0.5", "grpo.reward_weights.budget_penalty=2"])  # the trainer's component
    assert cfg.grpo.reward_weights == {"budget_penalty": 2.0}


def test_binary_and_folder_configs(tmp_path):
    path = tmp_path / "model.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    r = runner.invoke(app, ["config", "show", str(path)])
    assert r.exit_code == 2 and "not a text (UTF-8) TOML file" in r.output and str(path) in r.output
    r = runner.invoke(app, ["config", "show", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output


def test_good_values_still_load():
    cfg = load_config(None, ["grpo.lr=1", "grpo.clip_high=0.28", "grpo.seed=2147483647", "grpo.max_grad_norm=1e6",
                             "policy.hidden=[8]", 'grpo.device="cuda:1"'])
    assert cfg.grpo.lr == 1.0 and cfg.grpo.seed == 2**31 - 1 and cfg.policy.hidden == [8]
