"""PGRPOTrainer (grpokit.llm) on a tiny GPT-2 built in code: statistics, eval, checkpoints, errors, learning."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("trl", reason="needs the llm extra (transformers, trl): pip install 'grpokit[llm]'")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from grpokit.llm.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from grpokit.llm.trainer import STATE_FILE, PGRPOTrainer  # noqa: E402

pytestmark = pytest.mark.llm

WORDS = "a b c d e : p0 p1 p2".split()
G = 4
EPS = 1e-4


def score(completions, **kwargs):
    """Share of the completion's words that are 'a' (0 for an empty completion)."""
    out = []
    for c in completions:
        w = c.split()
        out.append(w.count("a") / len(w) if w else 0.0)
    return out


class Recording(PGRPOTrainer):
    """Records, per generation batch, the gathered rewards, group codes and the advantages trained on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[dict] = []

    def _advantages(self, rewards_per_func, codes, g, mode):
        adv = super()._advantages(rewards_per_func, codes, g, mode)
        r = (rewards_per_func.cpu() * self.reward_weights.unsqueeze(0)).nansum(1).view(-1, g)
        self.batches.append({"rewards": r.double(), "codes": codes.clone(), "adv": adv.view(-1, g).double(), "mode": mode})
        return adv


def _dataset(n: int = 24, groups=("x", "y", "z")) -> Dataset:
    prompts = [f"p{i % 3} :" for i in range(n)]
    return Dataset.from_dict({"prompt": prompts, "preference_group": [groups[i % 3] for i in range(n)]})


def _args(tmp_path, **kw) -> GRPOConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=5,
        max_steps=3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        learning_rate=5e-3,
        bf16=False,
        seed=0,
        disable_tqdm=True,
        temperature=1.0,
    )
    base.update(kw)
    return GRPOConfig(**base)


def _trainer(tmp_path, cls=Recording, dataset=None, **kw):
    tok = tiny_tokenizer(WORDS)
    trainer_kw = {k: kw.pop(k) for k in list(kw) if k in ("advantage", "min_history", "decay", "groups", "eval_dataset")}
    return cls(
        model=tiny_model(tok, seed=0),
        reward_funcs=score,
        args=_args(tmp_path, **kw),
        train_dataset=dataset if dataset is not None else _dataset(),
        processing_class=tok,
        **trainer_kw,
    )


def _brute_history(batches, upto: int, code: int) -> torch.Tensor:
    """All rewards of group ``code`` in the generation batches before ``upto``."""
    parts = [b["rewards"][b["codes"] == code].reshape(-1) for b in batches[:upto] if b["mode"] == "train"]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def test_statistics_and_advantages_match_brute_force(tmp_path):
    tr = _trainer(tmp_path, min_history=2, max_steps=4)
    tr.train()
    assert len(tr.batches) == 4
    est = tr.advantage_estimator
    for c in range(3):
        hist = _brute_history(tr.batches, len(tr.batches), c)
        assert est.count[c].item() == hist.numel()
        assert est.mean[c].item() == pytest.approx(hist.mean().item(), abs=1e-6)
        assert est.std[c].item() == pytest.approx(hist.std(unbiased=False).item(), abs=1e-6)
    used_history = 0
    for k, b in enumerate(tr.batches):
        for row in range(b["rewards"].shape[0]):
            c = int(b["codes"][row])
            r = b["rewards"][row]
            hist = _brute_history(tr.batches, k, c)
            if hist.numel() >= 2:  # history baseline: (r - mu_p) / (sigma_p + eps)
                expect = (r - hist.mean()) / (hist.std(unbiased=False) + EPS)
                used_history += 1
            elif float(r.max() - r.min()) <= 1e-8:
                expect = torch.zeros_like(r)
            else:  # GRPO fallback, TRL's formula
                expect = (r - r.mean()) / (r.std() + EPS)
            torch.testing.assert_close(b["adv"][row], expect, atol=1e-4, rtol=1e-4)
    assert used_history > 0


def test_grpo_name_reproduces_trl_advantages(tmp_path):
    tr = _trainer(tmp_path, advantage="grpo", max_steps=2)
    tr.train()
    for b in tr.batches:
        r = b["rewards"]
        expect = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + EPS)
        torch.testing.assert_close(b["adv"], expect, atol=1e-5, rtol=1e-5)


def test_decomposition_through_the_trainer(tmp_path):
    """A_p = (sigma_G / sigma_p) A_GRPO + (mu_G - mu_p) / sigma_p on the advantages actually trained on."""
    tr = _trainer(tmp_path, min_history=2, max_steps=4)
    tr.train()
    checked = 0
    for k, b in enumerate(tr.batches):
        for row in range(b["rewards"].shape[0]):
            r = b["rewards"][row]
            hist = _brute_history(tr.batches, k, int(b["codes"][row]))
            sd_g = r.std()
            if hist.numel() < 2 or sd_g < 1e-6:
                continue
            mu_p, sd_p = hist.mean(), hist.std(unbiased=False)
            a_grpo = (r - r.mean()) / (sd_g + EPS)
            rhs = (sd_g + EPS) / (sd_p + EPS) * a_grpo + (r.mean() - mu_p) / (sd_p + EPS)
            torch.testing.assert_close(b["adv"][row], rhs, atol=1e-4, rtol=1e-4)
            checked += 1
    assert checked > 0


def test_eval_never_updates_statistics(tmp_path):
    tr = _trainer(tmp_path, min_history=2, max_steps=2, eval_dataset=_dataset(8), per_device_eval_batch_size=8)
    tr.train()
    before = {k: v.clone() for k, v in tr.advantage_estimator.state_dict().items()}
    n_train = len(tr.batches)
    metrics = tr.evaluate()
    assert any(b["mode"] == "eval" for b in tr.batches[n_train:])
    for k, v in tr.advantage_estimator.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert "eval_pgrpo/frac_history" in metrics
    assert "eval_pgrpo/x/reward_mean" in metrics


def test_logged_advantages_and_group_metrics(tmp_path):
    tr = _trainer(tmp_path, min_history=2, max_steps=3)
    tr.train()
    last = tr.batches[-1]["adv"].reshape(-1).tolist()
    assert list(tr._logs["advantages"])[-len(last) :] == pytest.approx(last)
    logged = [e for e in tr.state.log_history if "pgrpo/frac_history" in e]
    assert len(logged) == 3
    for k, (entry, b) in enumerate(zip(logged, tr.batches)):
        ready = [_brute_history(tr.batches, k, int(c)).numel() >= 2 for c in b["codes"]]
        assert entry["pgrpo/frac_history"] == pytest.approx(sum(ready) / len(ready))
        for c, name in enumerate(("x", "y", "z")):
            sel = b["rewards"][b["codes"] == c]
            if sel.numel():
                assert entry[f"pgrpo/{name}/count"] == sel.numel()
                assert entry[f"pgrpo/{name}/reward_mean"] == pytest.approx(sel.mean().item(), abs=1e-6)
            else:
                assert f"pgrpo/{name}/reward_mean" not in entry
            assert entry[f"pgrpo/{name}/history_count"] == _brute_history(tr.batches, k + 1, c).numel()


def test_checkpoint_round_trip(tmp_path):
    tr = _trainer(tmp_path, min_history=2, max_steps=2, save_strategy="steps", save_steps=2)
    tr.train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    saved = torch.load(ckpt / STATE_FILE, weights_only=True)
    assert saved["groups"] == ["x", "y", "z"] and saved["advantage"] == "pgrpo"
    for k, v in tr.advantage_estimator.state_dict().items():
        assert torch.equal(saved["state"][k], v)
    # resume: statistics restored, then one more batch merged in
    tr2 = _trainer(tmp_path, min_history=2, max_steps=3, save_strategy="no")
    tr2.train(resume_from_checkpoint=str(ckpt))
    assert len(tr2.batches) == 1
    b = tr2.batches[0]
    for c in range(3):
        merged = torch.cat([_brute_history(tr.batches, 2, c), b["rewards"][b["codes"] == c].reshape(-1)])
        assert tr2.advantage_estimator.count[c].item() == merged.numel()
        assert tr2.advantage_estimator.mean[c].item() == pytest.approx(merged.mean().item(), abs=1e-6)
    # a checkpoint of other groups is refused
    tr3 = _trainer(tmp_path, groups=["x", "y", "w"], max_steps=3)
    with pytest.raises(ValueError, match="checkpoint groups"):
        tr3.load_pgrpo_state(saved)
    tr4 = _trainer(tmp_path, advantage="grpo", max_steps=3)
    with pytest.raises(ValueError, match="'pgrpo' statistics"):
        tr4.load_pgrpo_state(saved)


def test_mixed_groups_within_a_prompt_rejected(tmp_path):
    tr = _trainer(tmp_path)
    rows = [{"prompt": "p0 :", "preference_group": "x"}] * (G - 1) + [{"prompt": "p0 :", "preference_group": "y"}]
    with pytest.raises(ValueError, match=r"prompt 0 .*different preference groups \['x', 'y'\]"):
        tr._generate_and_score_completions(rows)


def test_mixed_groups_across_processes_rejected(tmp_path, monkeypatch):
    """Ids are gathered before the check: a prompt split over two processes is checked whole."""
    import grpokit.llm.trainer as mod

    tr = _trainer(tmp_path)
    other = [0, 0]  # process 0 holds the first half of the prompt, group x
    monkeypatch.setattr(mod, "gather_object", lambda local: other + local)
    rows = [{"prompt": "p0 :", "preference_group": "y"}] * 2
    with pytest.raises(ValueError, match="different preference groups"):
        tr._gathered_group_codes(rows, G)
    rows = [{"prompt": "p0 :", "preference_group": "x"}] * 2
    assert tr._gathered_group_codes(rows, G).tolist() == [0]


def test_bad_groups_rejected(tmp_path):
    tr = _trainer(tmp_path)
    with pytest.raises(ValueError, match=r"preference group 'w' .*batch row 0"):
        tr._generate_and_score_completions([{"prompt": "p0 :", "preference_group": "w"}] * G)
    with pytest.raises(ValueError, match="no preference-group column 'preference_group'"):
        _trainer(tmp_path, dataset=Dataset.from_dict({"prompt": ["p0 :"] * 8}))
    with pytest.raises(ValueError, match="unknown advantage"):
        _trainer(tmp_path, advantage="ppo")
    with pytest.raises(ValueError, match="sum_then_normalize"):
        _trainer(tmp_path, multi_objective_aggregation="normalize_then_sum")


def _mean_reward(model, tok, n: int = 96, seed: int = 123) -> float:
    torch.manual_seed(seed)
    enc = tok(["p0 :"] * n, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, max_new_tokens=5, temperature=1.0, top_k=0)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(score(texts)) / n


def test_a_few_steps_move_the_reward(tmp_path):
    tr = _trainer(tmp_path, min_history=8, max_steps=15, learning_rate=2e-2, per_device_train_batch_size=32)
    before = _mean_reward(tr.model, tr.processing_class)
    tr.train()
    after = _mean_reward(tr.model, tr.processing_class)
    assert math.isfinite(after)
    assert after > before + 0.1, (before, after)
