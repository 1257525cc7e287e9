"""Config loading, overrides, and the grpokit command against good and bad input."""

import json
import tomllib

import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import ConfigError, apply_overrides, config_to_toml, load_config

runner = CliRunner()
FAST = ["--set", "grpo.steps=6", "--set", "grpo.batch_size=32", "--set", "grpo.eval_size=64", "--set", 'grpo.device="cpu"']


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = load_config(None, ["grpo.lr=0.01", 'grpo.advantage.name="pgrpo"', "scenario.shares=[0.7, 0.2, 0.1]"])
    path = tmp_path / "run.toml"
    path.write_text(config_to_toml(cfg))
    again = load_config(path)
    assert again.model_dump() == cfg.model_dump()
    assert again.grpo.lr == 0.01 and again.grpo.advantage.name == "pgrpo"
    assert again.scenario.shares == [0.7, 0.2, 0.1]


def test_overrides_parse_toml_literals():
    data = apply_overrides({}, ["a.x=1", "a.y=0.5", "a.z=true", "a.w=[1, 2]", "a.s=word", 'a.q="quoted"'])
    assert data == {"a": {"x": 1, "y": 0.5, "z": True, "w": [1, 2], "s": "word", "q": "quoted"}}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("grpo.lr=abc", "grpo.lr"),
        ("grpo.lr=-1", "grpo.lr"),
        ("grpo.nope=1", "grpo.nope"),
        ("nosection.k=1", "nosection"),
        ("scenario.shares=[0.5, 0.2]", "scenario.shares"),
        ("scenario.name=unknown", "unknown scenario"),
        ('grpo.advantage.name="ppo"', "grpo.advantage.name"),
        ("grpo.group_size=1", "grpo.group_size"),
        ('grpo.device="tpu"', "grpo.device"),
        ("lr=1", "section"),
        ("grpo.lr", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grpo\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_config(empty).scenario.name == "preferences"


def test_train_writes_run_directory_and_resumes(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--no-progress", *FAST])
    assert result.exit_code == 0, result.output
    for name in ("config.toml", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and "grpo" in summary["policies"] and "oracle" in summary
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["grpo"]["steps"] == 6
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(7))

    # a second train into the same directory refuses and keeps what is there
    before = (out / "checkpoint.pt").read_bytes()
    again = runner.invoke(app, ["train", "--out", str(out), "--no-progress", *FAST])
    assert again.exit_code == 2 and "already holds a run" in again.output
    assert (out / "checkpoint.pt").read_bytes() == before

    # resume with the steps raised in the saved config: continues from step 6
    (out / "config.toml").write_text((out / "config.toml").read_text().replace("steps = 6", "steps = 9"))
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10))


def test_train_errors(tmp_path):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "x"), "--set", "grpo.lr=abc"])
    assert r.exit_code == 2 and "grpo.lr" in r.output
    assert not (tmp_path / "x").exists()
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "y"), "--resume"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["train", str(tmp_path / "none.toml"), "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_config_show_prints_resolved_toml():
    r = runner.invoke(app, ["config", "show", "--set", "grpo.lr=0.5"])
    assert r.exit_code == 0
    assert tomllib.loads(r.output)["grpo"]["lr"] == 0.5


def test_bench_preferences_cli(tmp_path):
    out = tmp_path / "prefs.json"
    r = runner.invoke(app, ["bench", "preferences", "--json", str(out), "--seeds", "2", "--methods", "grpo,pgrpo", *FAST])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"grpo", "pgrpo"}
    block = data["methods"]["pgrpo"]
    assert set(block["policies"]["pgrpo"]["per_group"]) == {"g0", "g1", "g2"}
    assert set(block["oracle"]["per_group"]) == {"g0", "g1", "g2"}
    assert set(block["steps_to_90pct"]) == {"overall", "g0", "g1", "g2"}
    assert len(block["policies"]["pgrpo"]["per_seed"]) == 2
    r = runner.invoke(app, ["bench", "preferences", "--json", str(out), "--methods", "ppo"])
    assert r.exit_code == 2 and "ppo" in r.output


def test_bench_throughput_cli(tmp_path):
    out = tmp_path / "tp.json"
    r = runner.invoke(app, ["bench", "throughput", "--json", str(out), "--steps", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    first = data["results"][0]
    assert (first["batch_size"], first["group_size"]) == (4096, 8)
    assert first["engine"]["decisions_per_second"] > 0


@pytest.mark.parametrize("name", ["preferences", "marketing", "pricing", "allocation"])
def test_every_scenario_config_round_trips(tmp_path, name):
    cfg = load_config(None, [f"scenario.name={name}"])
    path = tmp_path / "run.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path).model_dump() == cfg.model_dump()
