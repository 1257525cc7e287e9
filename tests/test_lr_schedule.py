"""grpo.lr_schedule: the Adam step size over the run (constant, linear or cosine down to lr·f)."""

import math

import pytest
import torch

from grpokit.config import ConfigError, load_config
from grpokit.runner import build_trainer

_SMALL = ["grpo.batch_size=32", "grpo.eval_size=64", "grpo.eval_every=100", 'grpo.device="cpu"']


def _trainer(*over, steps=5, tmp=None):
    cfg = load_config(None, [*_SMALL, f"grpo.steps={steps}", *over])
    return build_trainer(cfg, out_dir=tmp) if tmp is not None else build_trainer(cfg)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_each_update_uses_the_scheduled_step_size(schedule):
    trainer = _trainer(f'grpo.lr_schedule="{schedule}"', "grpo.lr_final_fraction=0.25", steps=5)
    seen = []
    step = trainer.optimizer.step

    def recording(*a, **k):  # the lr Adam really applies, read at the moment of the update
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*a, **k)

    trainer.optimizer.step = recording
    for _ in range(5):
        trainer.train_step()
    lr, f = trainer.config.lr, 0.25
    ts = [k / 4 for k in range(5)]  # t = step / (steps − 1): 1 at the last update
    expected = {"constant": [lr] * 5,
                "linear": [lr * (1 - (1 - f) * t) for t in ts],
                "cosine": [lr * (f + (1 - f) * (1 + math.cos(math.pi * t)) / 2) for t in ts]}[schedule]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(lr) and seen[-1] == pytest.approx(lr if schedule == "constant" else lr * f)


def test_resume_continues_the_schedule(tmp_path):
    over = ['grpo.lr_schedule="linear"', "grpo.checkpoint_every=3"]
    whole = _trainer(*over, steps=6)
    whole.train()
    part = _trainer(*over, steps=6, tmp=tmp_path)
    part.train(steps=3)
    again = _trainer(*over, steps=6, tmp=tmp_path)
    again.resume()
    assert again.step == 3 and again.learning_rate() == pytest.approx(whole.config.lr * (1 - 3 / 5))
    again.train()
    for a, b in zip(whole.policy.parameters(), again.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ['grpo.lr_schedule="exponential"'])
    with pytest.raises(ConfigError, match="lr_final_fraction"):
        load_config(None, ["grpo.lr_final_fraction=1.5"])


def test_a_constant_run_resumed_from_a_decayed_checkpoint_takes_the_configs_lr(tmp_path):
    # a run trained with a linear decay, resumed (more steps) with lr_schedule = constant: Adam's step size is the
    # config's lr again, not the decayed one stored in the optimizer's checkpoint
    cfg = load_config("examples/marketing.toml", ["grpo.steps=4", "grpo.batch_size=32", "grpo.eval_size=64",
                                                  'grpo.lr_schedule="linear"', "grpo.lr=0.01", 'grpo.device="cpu"'])
    build_trainer(cfg, tmp_path).train()
    more = load_config("examples/marketing.toml", ["grpo.steps=6", "grpo.batch_size=32", "grpo.eval_size=64",
                                                   "grpo.lr=0.01", 'grpo.device="cpu"'])
    trainer = build_trainer(more, tmp_path)
    trainer.train()
    assert trainer.step == 6 and all(g["lr"] == 0.01 for g in trainer.optimizer.param_groups)
