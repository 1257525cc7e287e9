"""`grpokit train` under faults, the way a user meets them: kill -9 and Ctrl-C mid-run, resuming a
finished run, damaged checkpoints and metrics, an unwritable --out."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app

runner = CliRunner()
# small and slow enough to interrupt: checkpoints at 10, 20, 30 of 40 steps
RUN = ["--set", "grpo.steps=40", "--set", "grpo.batch_size=16", "--set", "grpo.eval_size=64", "--set", "grpo.eval_every=5",
       "--set", "grpo.checkpoint_every=10", "--set", 'grpo.device="cpu"', "--set", 'grpo.advantage.name="pgrpo"',
       "--set", "grpo.advantage.min_history=4", "--set", "grpo.beta=0.05"]
GRPOKIT = [sys.executable, "-c", "from grpokit.cli import app; app()"]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _policy(out: Path) -> list[torch.Tensor]:
    return list(torch.load(out / "checkpoint.pt", weights_only=True)["policy"].values())


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in ("seconds", "decisions_per_second")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    torch.set_num_threads(1)  # as conftest sets for every test, and as the subprocesses run (same arithmetic)
    r = runner.invoke(app, ["train", "--out", str(out), "--no-progress", *RUN])
    assert r.exit_code == 0, r.output
    return out


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread, as the in-process runs
    return subprocess.Popen([*GRPOKIT, "train", "--out", str(out), "--no-progress", *RUN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_rows(proc: subprocess.Popen, out: Path, n: int, timeout: float = 240.0) -> int:
    """Wait until metrics.jsonl holds ``n`` rows (the run still going); return how many it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            have = len((out / "metrics.jsonl").read_text().splitlines())
        except FileNotFoundError:
            have = 0
        if have >= n:
            return have
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the run did not reach the wanted step in time")


def test_kill_9_then_resume_equals_the_uninterrupted_run(straight, tmp_path):
    out = tmp_path / "killed run"  # a path with a space, as users have
    proc = _start(out)
    _wait_rows(proc, out, 16)  # past the checkpoint at step 10
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # really killed mid-run, not finished
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 10 <= step < 40
    # every step up to the checkpoint is in metrics.jsonl (nothing lost in a buffer)
    assert [r["step"] for r in _rows(out)][: step + 1] == list(range(step + 1))
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert _rows(out) == _rows(straight)
    assert all(torch.equal(a, b) for a, b in zip(_policy(out), _policy(straight)))
    assert _summary(out) == _summary(straight)


def test_ctrl_c_checkpoints_says_where_and_exits_130(straight, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_rows(proc, out, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 40  # the interrupted step was checkpointed, not lost
    assert f"after step {step}" in err and str(out / "checkpoint.pt") in err and "--resume" in err
    assert not (out / "summary.json").exists()
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert _rows(out) == _rows(straight)
    assert all(torch.equal(a, b) for a, b in zip(_policy(out), _policy(straight)))


def test_resume_of_a_finished_run_keeps_its_summary(straight, tmp_path):
    out = tmp_path / "done"
    runner.invoke(app, ["train", "--out", str(out), "--no-progress", *RUN])
    before = (out / "summary.json").read_bytes()
    assert json.loads(before)["last_metrics"]
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (out / "summary.json").read_bytes() == before


@pytest.fixture()
def finished(straight, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(straight, out)
    return out


@pytest.mark.parametrize("damage, fragment", [
    (lambda b: b[: len(b) // 2], "damaged or not a grpokit checkpoint"),          # truncated (a full disk)
    (lambda b: b"\x00garbage" * 100, "damaged or not a grpokit checkpoint"),       # garbage
])
def test_damaged_checkpoint_is_one_error_line_naming_it(finished, damage, fragment):
    ckpt = finished / "checkpoint.pt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    r = runner.invoke(app, ["train", "--out", str(finished), "--resume", "--no-progress"])
    assert r.exit_code == 2 and r.output.startswith("error:"), r.output
    assert str(ckpt) in r.output and fragment in r.output and "Traceback" not in r.output


def test_checkpoint_of_another_run_is_refused(finished, tmp_path):
    other = tmp_path / "wide"
    r = runner.invoke(app, ["train", "--out", str(other), "--no-progress", *RUN, "--set", "policy.hidden=[8]",
                            "--set", "grpo.steps=2"])
    assert r.exit_code == 0, r.output
    (finished / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    r = runner.invoke(app, ["train", "--out", str(finished), "--resume", "--no-progress"])
    assert r.exit_code == 2 and "does not fit this run" in r.output and "checkpoint.pt" in r.output


def test_a_pickle_in_the_checkpoint_is_never_unpickled(finished):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"step": Boom()}, finished / "checkpoint.pt")
    r = runner.invoke(app, ["train", "--out", str(finished), "--resume", "--no-progress"])
    assert r.exit_code == 2 and "damaged or not a grpokit checkpoint" in r.output


def test_partial_last_metrics_line_after_the_checkpoint_is_dropped(finished, straight):
    # a crash on a full disk mid-write of the row after the checkpoint: resume must work
    cfg = finished / "config.toml"
    cfg.write_text(cfg.read_text().replace("steps = 40", "steps = 41"))
    with open(finished / "metrics.jsonl", "a") as f:
        f.write('{"step": 41, "decisions": 26')
    r = runner.invoke(app, ["train", "--out", str(finished), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = _rows(finished)
    assert [x["step"] for x in rows] == list(range(42)) and rows[:41] == _rows(straight)


def test_garbage_metrics_line_before_the_checkpoint_names_file_and_line(finished):
    lines = (finished / "metrics.jsonl").read_text().splitlines()
    lines[5] = lines[5][:20]
    (finished / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (finished / "summary.json").unlink()
    r = runner.invoke(app, ["train", "--out", str(finished), "--resume", "--no-progress"])
    assert r.exit_code == 2 and "metrics.jsonl, line 6" in r.output, r.output


def test_a_run_folder_with_files_but_no_checkpoint_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("# my notes\n")
    r = runner.invoke(app, ["train", "--out", str(out), "--no-progress", *RUN])
    assert r.exit_code == 2 and "already holds a run (config.toml)" in r.output
    assert (out / "config.toml").read_text() == "# my notes\n"
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert r.exit_code == 2 and "checkpoint.pt does not exist" in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = runner.invoke(app, ["train", "--out", str(ro / "run"), "--no-progress", *RUN])
    finally:
        ro.chmod(0o700)
    assert r.exit_code == 2 and "cannot write" in r.output and str(ro) in r.output


@pytest.mark.parametrize("code, words", [(errno.EACCES, "Permission denied"), (errno.ENOSPC, "free some space")])
def test_unwritable_or_full_out_fails_before_training(tmp_path, monkeypatch, code, words):
    import tempfile

    real = tempfile.mkstemp

    def failing(*a, **k):
        if "grpokit-write-check" in str(k.get("prefix", "")):
            raise OSError(code, os.strerror(code))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", failing)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--out", str(out), "--no-progress", *RUN])
    assert r.exit_code == 2 and r.output.startswith("error:") and words in r.output, r.output
    assert str(out) in r.output and not (out / "config.toml").exists()


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = runner.invoke(app, ["train", "--out", str(f), "--no-progress", *RUN])
    assert r.exit_code == 2 and "is a file, not a folder" in r.output


def test_reward_weights_on_a_single_number_reward_are_refused():
    from grpokit.config import GRPOConfig
    from grpokit.grpo import GRPOTrainer
    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.scenarios import TensorContextSampler

    sampler = TensorContextSampler(torch.randn(64, 3))
    trainer = GRPOTrainer(Policy(MLPTorso(3, [8]), CategoricalHead(2)), lambda c, a: (a == 1).float(),
                          GRPOConfig(steps=1, batch_size=8, device="cpu", reward_weights={"revnue": 2.0}),
                          context_sampler=sampler)
    with pytest.raises(ValueError, match=r"grpo.reward_weights names \['revnue'\].*single number"):
        trainer.train()


def test_eval_size_too_small_for_some_groups_is_not_a_traceback(tmp_path):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--no-progress", "--set", "grpo.steps=2",
                            "--set", "grpo.batch_size=8", "--set", "grpo.eval_size=1", "--set", 'grpo.device="cpu"'])
    assert r.exit_code == 0, r.output
    assert "raise grpo.eval_size" in " ".join(r.output.split())
