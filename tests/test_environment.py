"""Every run's summary records what it ran on (grpokit.environment): Python, platform, threads and the
versions of the libraries that shape its numbers."""

import json
from importlib import metadata

import torch

from grpokit.config import load_config
from grpokit.environment import environment_info, package_versions
from grpokit.runner import build_trainer


def test_versions_come_from_the_installed_metadata():
    v = package_versions(("torch", "numpy", "no-such-distribution-here"))
    assert v["torch"] == metadata.version("torch") and v["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert v["numpy"] == metadata.version("numpy") and v["no-such-distribution-here"] is None
    env = environment_info()
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu_count"] >= 1
    assert env["packages"]["grpokit"] is not None and set(env) == {"python", "platform", "machine", "cpu_count",
                                                                    "torch_threads", "packages"}


def test_a_training_summary_carries_the_environment(tmp_path):
    cfg = load_config("examples/marketing.toml", ["grpo.steps=2", "grpo.batch_size=32", "grpo.eval_size=64",
                                                  'grpo.device="cpu"'])
    build_trainer(cfg, tmp_path).train()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["environment"]["packages"]["torch"] == metadata.version("torch")
