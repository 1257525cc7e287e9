"""The closed loop: serve, learn from the served log, gate, shadow, pilot by cohort, promote or roll back.

``run_loop(config, out_dir)`` starts a real ``grpokit serve`` on a free loopback port
(:mod:`~grpokit.loop.service`) and plays the scenario's customers against it over HTTP
(:mod:`~grpokit.loop.traffic`). Each round r:

1. **serve** ``loop.decisions`` customers with the live policy (round 0: the business's rule, the
   best single offer, or uniform random), exploration ``epsilon``; rewards come back late, some
   never, some twice;
2. **guardrail**: if the live version was promoted (or planted) last round, compare it per cohort
   with the version before it on this round's served log (DR estimate of the previous version vs the
   live one's on-policy mean, paired, and the previous version's own served mean of last round vs
   now, Welch); significantly worse in any cohort, or over all cohorts, at family-wise level
   ``guardrail_alpha`` (Bonferroni over the cohorts, the total and both tests) rolls back through
   the admin endpoint;
3. **learn** a candidate from the served log alone (the latest ``train_window`` rewarded rows, minus
   this round's holdout): a cross-fitted outcome model and GRPO with the cohorts as P-GRPO groups
   (``grpokit.offline.learn.learn_from_outcome_model``);
4. **gate** it on the holdout (served decisions never trained on): DR value of the candidate's served
   distribution and its paired improvement over the live one, with CIs, per cohort too; a screen
   (``gate_screen``): ``better`` holds unless the improvement's lower bound exceeds ``gate_margin``,
   ``not_worse`` holds only when its upper bound does not;
5. **shadow** it (the live policy answers, the candidate's choices are logged), then **pilot** it:
   cohorts stratified on this round's served outcome, half of each stratum on the candidate
   (canary by cohort), sized from the power figure when ``pilot_effect`` is set, analysed from the
   served log (:mod:`~grpokit.loop.pilot`); ``decision = "pilot"``: promote when the pilot's interval
   lies above ``pilot_margin``; ``"combined"``: when Stouffer's z of the gate and the pilot
   (:func:`_combined_decision`) is significant and the pilot's estimate is positive; else hold.

Every round records the simulator's truth beside what the business saw: the live version's true
value and share of the oracle (exploration included), the off-policy and pilot intervals and the
true quantities they estimate. ``summary.json`` holds a ``rounds`` list; ``report.html`` shows it.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grpokit.atomic import atomic_write_json
from grpokit.loop.config import CONTINUOUS_SCENARIOS, LoopConfig
from grpokit.loop.world import World

__all__ = ["run_loop"]

_PHASE_SEED = {"live": 1, "shadow": 2, "pilot": 3}


# -- policies ---------------------------------------------------------------------------------------


def _constant_policy(obs_dim: int, n_actions: int, action: int | None, policy_cfg):
    """A policy that always chooses ``action`` (logit +30), or uniform random when None."""
    from grpokit.policy.heads import CategoricalHead
    from grpokit.policy.network import MLPTorso, Policy

    p = Policy(MLPTorso(obs_dim, policy_cfg.hidden, policy_cfg.activation), CategoricalHead(n_actions))
    with torch.no_grad():
        p.out.weight.zero_()
        p.out.bias.zero_()
        if action is not None:
            p.out.bias[action] = 30.0
    return p


@torch.no_grad()
def _pi(policy, x: np.ndarray) -> np.ndarray:
    policy.eval()
    return policy(torch.as_tensor(np.asarray(x, dtype=np.float32))).log_probs.exp().double().numpy()


def _served(pi: np.ndarray, eps: float) -> np.ndarray:
    return (1.0 - eps) * pi + eps / pi.shape[1]


def _dr_terms(r: np.ndarray, a: np.ndarray, p: np.ndarray, target: np.ndarray, rhat: np.ndarray) -> np.ndarray:
    """Per-row DR terms psi_i = Σ_a t(a|x_i) r̂(x_i, a) + t(a_i|x_i) / p_i (r_i − r̂(x_i, a_i)); mean = DR value."""
    rows = np.arange(len(r))
    return (target * rhat).sum(1) + target[rows, a] / p * (r - rhat[rows, a])


def _mean_ci(terms: np.ndarray, alpha: float) -> dict:
    """mean ± z_{1−alpha/2} sd / sqrt(n)."""
    from scipy.stats import norm

    m = float(terms.mean())
    half = float(norm.ppf(1 - alpha / 2) * terms.std(ddof=1) / math.sqrt(len(terms)))
    return {"value": m, "ci_low": m - half, "ci_high": m + half}


def _holdout_mask(ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """A fixed split of served decisions by a hash of (seed, decision id): True = held out for gates, forever."""
    h = np.fromiter((zlib.crc32(f"{seed}:{d}".encode()) for d in ids), dtype=np.float64, count=len(ids))
    return h / 2**32 < share


def _gate_screen(diff: np.ndarray, screen: str, alpha: float, margin: float) -> dict:
    """The gate's screen on per-row paired DR differences (candidate − live), interval mean ± z sd / sqrt(n).

    ``better``: pass when the lower end of the (1 − alpha) interval is above ``margin`` (the log shows the
    candidate better); ``not_worse``: pass unless its upper end is at or below ``margin`` (the log shows
    it worse); alpha = 1 is the point estimate.
    """
    ci = _mean_ci(diff, alpha)
    bound = ci["ci_low"] if screen == "better" else ci["ci_high"]
    return {"gate_screen": screen, "gate_alpha": alpha, "gate_lower_bound": ci["ci_low"],
            "gate_upper_bound": ci["ci_high"], "passed": bool(bound > margin)}


def _combined_decision(gate: dict, pilot: dict, alpha: float, weights: str = "equal") -> dict:
    """Stouffer's combination of the two independent one-sided tests of "the candidate is no better".

    z_gate = DR improvement / its se on the held-out log (rows served before the pilot), z_pilot =
    Φ^-1(1 − p) with p the pilot's one-sided randomization p-value; z = (z_gate + z_pilot) / sqrt(2)
    is N(0, 1) (or below) when neither effect is positive. Promote when z > z_{1 − alpha/2} and the
    pilot's own estimate is above 0 (the online experiment points the same way); ``stop`` when the
    pilot's interval lies below 0; else hold.
    """
    from scipy.stats import norm

    imp = gate["improvement"]
    se = (imp["ci_high"] - imp["ci_low"]) / (2 * norm.ppf(1 - alpha / 2))
    z_gate = imp["value"] / se if se > 0 else 0.0
    p = pilot["randomization"]["p_greater"]
    z_pilot = float(norm.isf(p))
    # weights "precision": w = 1 / se (z = (w_g z_g + w_p z_p) / sqrt(w_g² + w_p²), still N(0, 1) under the null)
    w_g, w_p = (1.0, 1.0) if weights == "equal" else (1.0 / se if se > 0 else 0.0, 1.0 / pilot["ci_t"]["se"])
    z = (w_g * z_gate + w_p * z_pilot) / math.sqrt(w_g**2 + w_p**2)
    crit = float(norm.isf(alpha / 2))
    if z > crit and pilot["estimate"] > 0:
        verdict = "promote"
    elif pilot["ci_high"] < 0:
        verdict = "stop"
    else:
        verdict = "hold"
    return {"rule": "combined", "weights": weights, "w_gate": float(w_g), "w_pilot": float(w_p), "z_gate": float(z_gate), "pilot_p_greater": p, "z_pilot": z_pilot, "z": float(z),
            "critical": crit, "verdict": verdict}


def _pilot_size(power: dict, least: int, most: int) -> int:
    """Pilot decisions from the power figure: ``decisions_needed`` for the planned effect, within [least, most].

    No power figure (fewer than 5 cohorts): ``least``; the effect out of reach (between-cohort floor): ``most``.
    """
    if "mde" not in power or "effect" not in power:
        return least
    need = power.get("decisions_needed")
    return most if need is None else int(min(max(need, least), most))


class _Version:
    def __init__(self, policy, path: Path, version: str, label: str):
        self.policy, self.path, self.version, self.label = policy, path, version, label


# -- the loop ---------------------------------------------------------------------------------------


class _Loop:
    continuous = False  #: categorical actions (marketing); :class:`_ContinuousLoop` for prices and splits

    def __init__(self, cfg: LoopConfig, out: Path, progress: bool):
        self.cfg, self.s, self.out, self.progress = cfg, cfg.loop, out, progress
        self.world = World(cfg.scenario, drift=self.s.drift, eval_size=self.s.eval_size, seed=self.s.seed)
        sc = self.world.scenario_at(0)
        self.features, self.labels, self.groups = sc.feature_names, sc.action_names, sc.group_names
        self.A = sc.n_offers
        self.store = out / "store.duckdb"
        self.frames: list[pd.DataFrame] = []
        self.rounds: list[dict] = []
        self.n_versions = 0

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # versions
    def _save(self, policy, label: str) -> _Version:
        from grpokit.policy.io import save_policy

        self.n_versions += 1
        path = self.out / "policies" / f"v{self.n_versions}_{label}.pt"
        save_policy(policy, path, {"feature_names": list(self.features), "action_labels": list(self.labels),
                                   "n_actions": self.A, "group_labels": list(self.groups), "loop_label": label})
        from grpokit.policy.deployed import DeployedPolicy

        return _Version(policy, path, DeployedPolicy.load(path).version, label)

    def _register(self, v: _Version) -> None:
        from grpokit.serve.tables import connect
        from grpokit.serve.versions import register

        con = connect(self.store, 60.0)
        try:
            register(con, self.store, v.path, note=f"loop {v.label}")
        finally:
            con.close()

    def _start_policy(self) -> _Version:
        sc = self.world.scenario_at(0)
        if self.s.start_policy == "uniform":
            return self._save(_constant_policy(sc.obs_dim, self.A, None, self.cfg.policy), "uniform")
        # the business's rule: the one offer that is best for everyone (from its past A/B tests;
        # here the simulator's truth on a fresh sample, so round 0 is the real best single offer)
        gen = torch.Generator().manual_seed(self.s.seed + 99)
        ctx = sc.sample_contexts(20_000, gen)
        best = int(World.table(sc, ctx).mean(0).argmax())
        return self._save(_constant_policy(sc.obs_dim, self.A, best, self.cfg.policy), f"best_single_{best}")

    def _bad_policy(self, rnd: int) -> _Version:
        """Fault injection: a model trained with the reward's sign flipped (a classic bug), on the served log."""
        from grpokit.offline.learn import learn_from_outcome_model
        from grpokit.offline.outcome import OutcomeModel

        train = pd.concat(self.frames, ignore_index=True).tail(self.s.train_window)
        x, a, r = self._x(train), train["action"].to_numpy(np.int64), train["reward"].to_numpy(np.float64)
        table = OutcomeModel(self.A, self.s.outcome_model, backend=self.s.outcome_backend, seed=self.s.seed, **self.s.outcome_params).fit(x, a, r).predict_crossfit()
        grpo = self.cfg.grpo.model_copy(update={"steps": 300, "lr": 0.03})
        policy, _ = learn_from_outcome_model(x, -table, grpo, self.cfg.policy)
        return self._save(policy, "planted_bad_sign_flipped")

    # data
    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(np.float64)

    def _collect(self, tag: str, expected: int, timeout_s: float = 120.0) -> tuple[pd.DataFrame, dict]:
        """The rewarded served rows of one phase, once the service has flushed them all."""
        from grpokit.serve.export import served_frame

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                frame, info = served_frame(self.store, shadow=True, continuous=self.continuous)
                rows = frame[frame["decision_id"].str.startswith(tag + "-")]
            except ValueError:
                rows, info = pd.DataFrame(), {}
            if len(rows) >= expected or time.monotonic() > deadline:
                if len(rows) < expected:
                    raise RuntimeError(f"phase {tag}: {len(rows)} rewarded decisions in the log after "
                                       f"{timeout_s} s, expected {expected}")
                return rows.reset_index(drop=True), info
            time.sleep(0.3)

    def _phase(self, client, rnd: int, name: str, n: int) -> tuple[dict, pd.DataFrame, dict]:
        from grpokit.loop.traffic import play

        tag = f"r{rnd}{name}"
        t0 = time.perf_counter()
        played = play(client, self.world.scenario_at(rnd), n, tag=tag, seed=self.s.seed * 100_003 + rnd * 101
                      + _PHASE_SEED[name], batch=self.s.batch, delivery=self.s.rewards)
        t1 = time.perf_counter()
        frame, info = self._collect(tag, n - played["posted"]["lost"])
        (self.out / "phases").mkdir(exist_ok=True)
        pd.DataFrame({"decision_id": played["event_ids"], "cohort": played["cohorts"], "action": played["actions"] if played["actions"].ndim == 1 else list(played["actions"]),
                      "arm": played["arms"].astype(str), "outcome": played["outcome"]}).to_parquet(
            self.out / "phases" / f"{tag}.parquet", index=False)  # what the simulator drew, for audits
        played["seconds"] = {"serve": t1 - t0, "collect": time.perf_counter() - t1}
        played["export"] = {k: info.get(k) for k in ("duplicate_rewards_ignored", "left_out_pending",
                                                    "late_rewards_ignored")}
        self.frames.append(frame)
        return played, frame, info

    # truth
    def _truth(self, rnd: int, v: _Version) -> dict:
        ctx = self.world.eval_contexts(rnd)
        return self.world.value(rnd, _served(_pi(v.policy, ctx.obs.double().numpy()), self.s.epsilon))

    # steps
    def _learn(self, rnd: int, train: pd.DataFrame) -> tuple[_Version, dict]:
        from grpokit.offline.learn import learn_from_outcome_model
        from grpokit.offline.outcome import OutcomeModel

        x = self._x(train)
        a = train["action"].to_numpy(np.int64)
        r = train["reward"].to_numpy(np.float64)
        g = train["group"].map({n: i for i, n in enumerate(self.groups)}).to_numpy(np.int64)
        t0 = time.perf_counter()
        table = OutcomeModel(self.A, self.s.outcome_model, backend=self.s.outcome_backend, seed=self.s.seed + rnd, **self.s.outcome_params).fit(x, a, r).predict_crossfit()
        grpo = self.cfg.grpo.model_copy(update={"seed": self.cfg.grpo.seed + rnd})
        policy, summary = learn_from_outcome_model(x, table, grpo, self.cfg.policy, group=g, n_groups=len(self.groups))
        v = self._save(policy, f"r{rnd}_candidate")
        return v, {"rows": len(train), "seconds": time.perf_counter() - t0, "steps": summary["steps"]}

    def _dr_rows(self, frame: pd.DataFrame, versions: list, seed: int) -> list[np.ndarray]:
        """Per-row DR terms (:func:`_dr_terms`) of each version's served distribution on ``frame``, one
        cross-fitted outcome model (seeded ``seed``) for all."""
        from grpokit.offline.outcome import OutcomeModel

        x = self._x(frame)
        a, r, p = frame["action"].to_numpy(np.int64), frame["reward"].to_numpy(np.float64), frame["pscore"].to_numpy()
        rhat = OutcomeModel(self.A, self.s.outcome_model, backend=self.s.outcome_backend, seed=seed, **self.s.outcome_params).fit(x, a, r).predict_crossfit()
        return [_dr_terms(r, a, p, _served(_pi(v.policy, x), self.s.epsilon), rhat) for v in versions]

    def _gate(self, rnd: int, hold: pd.DataFrame, cand: _Version, live: _Version) -> dict:
        """DR value of the candidate and its paired DR improvement over the live policy on held-out rows.

        The held-out rows come from several phases and rounds (several logging policies), so the
        improvement is DR(candidate) − DR(live) on the same rows, each row with its own logged
        propensity: psi_i(pi) = Σ_a pi(a|x_i) r̂(x_i, a) + pi(a_i|x_i) / p_i · (r_i − r̂(x_i, a_i)),
        normal CI mean(psi) ± z sd(psi) / sqrt(n) (per-row terms of a mean; n is in the thousands).
        """
        psi_c, psi_l = self._dr_rows(hold, [cand, live], self.s.seed + 500 + rnd)
        value, live_value, imp = _mean_ci(psi_c, self.s.alpha), _mean_ci(psi_l, self.s.alpha), _mean_ci(psi_c - psi_l, self.s.alpha)
        per = {}
        grp = hold["group"].to_numpy()
        for c in self.groups:
            rows = grp == c
            if rows.sum() < 50:
                continue
            e = _mean_ci(psi_c[rows] - psi_l[rows], self.s.alpha)
            per[c] = {"improvement": e["value"], "ci_low": e["ci_low"], "ci_high": e["ci_high"], "rows": int(rows.sum())}
        screen = _gate_screen(psi_c - psi_l, self.s.gate_screen, self.s.gate_alpha, self.s.gate_margin)
        return {"rows": len(hold), "candidate_value": value, "live_value": live_value,
                "improvement": imp, "per_cohort": per, **screen}

    def _guardrail(self, rnd: int, frame: pd.DataFrame, live: _Version, prev: _Version, prev_frame: pd.DataFrame | None) -> dict:
        """Is the live version worse than the one before it, over all cohorts or in one cohort?

        Two one-sided tests per block (all cohorts together; each cohort): the paired DR difference
        previous − live on this round's live log (per-row terms, :func:`_dr_terms`), and Welch's t
        on the previous version's served rewards of last round vs the live one's now. Family-wise
        level ``guardrail_alpha``: half of it for the two overall tests, half Bonferroni-split over the
        2 K cohort tests (a harm spread over all cohorts is caught by the overall block, a local one
        by its cohort's).
        """
        from scipy import stats

        r = frame["reward"].to_numpy(np.float64)
        psi_prev, psi_live = self._dr_rows(frame, [prev, live], self.s.seed + 900 + rnd)
        diff = psi_prev - psi_live
        grp = frame["group"].to_numpy()
        cohorts = [c for c in self.groups if (grp == c).sum() >= 50]
        levels = {"(all cohorts)": self.s.guardrail_alpha / 4}
        levels.update({c: self.s.guardrail_alpha / (4 * len(cohorts)) for c in cohorts})
        per, worse = {}, []
        for c in ["(all cohorts)"] + cohorts:
            rows = grp == c if c != "(all cohorts)" else np.ones(len(grp), dtype=bool)
            d = diff[rows]
            z = float(d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))) if d.std(ddof=1) > 0 else 0.0
            block = {"previous_minus_live_dr": float(d.mean()), "dr_p_one_sided": float(stats.norm.sf(z)),
                     "level": levels[c]}
            if prev_frame is not None:
                before = (prev_frame["reward"] if c == "(all cohorts)"
                          else prev_frame.loc[prev_frame["group"] == c, "reward"]).to_numpy()
                now = r[rows]
                if len(before) > 1:
                    t = stats.ttest_ind(before, now, equal_var=False)
                    block["before_minus_now"] = float(before.mean() - now.mean())
                    block["welch_p_one_sided"] = float(t.pvalue / 2 if t.statistic > 0 else 1 - t.pvalue / 2)
            block["worse"] = bool(min(block["dr_p_one_sided"], block.get("welch_p_one_sided", 1.0)) < levels[c])
            per[c] = block
            if block["worse"]:
                worse.append(c)
        return {"previous_version": prev.version, "levels": {"overall": levels["(all cohorts)"],
                "per_cohort": self.s.guardrail_alpha / (4 * max(len(cohorts), 1))}, "per_cohort": per,
                "worse_cohorts": worse, "rollback": bool(worse)}

    def _pilot(self, client, rnd: int, pre: pd.DataFrame, cand: _Version, live: _Version) -> dict:
        from grpokit.loop.pilot import analyze_from_log, plan_from_log, save_analysis, save_plan

        column = "reward"
        if self.s.pilot_adjust == "outcome_model":
            # CUPAC: a unit's outcome minus a prediction m(x) from its pre-treatment features, m fitted on
            # the pre-period log only; a fixed function of covariates keeps the randomization analysis valid
            from sklearn.ensemble import HistGradientBoostingRegressor

            m = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=self.s.seed + rnd)
            m.fit(self._x(pre), pre["reward"].to_numpy(np.float64))
            pre = pre.assign(adjusted=pre["reward"] - m.predict(self._x(pre)))
            column = "adjusted"
        kw = dict(design=self.s.pilot_design, reward=column, stratum_size=self.s.stratum_size,
                  seed=self.s.seed * 1000 + rnd, alpha=self.s.alpha, effect=self.s.pilot_effect)
        n_pilot = self.s.pilot_decisions
        if self.s.pilot_effect is not None:
            # sized from the power figure: the fewest decisions whose MDE (80 % power) is pilot_effect,
            # at least pilot_decisions, at most pilot_max_decisions
            n_pilot = _pilot_size(plan_from_log(pre, decisions=n_pilot, **kw).power, n_pilot, self.s.pilot_max_decisions)
        plan = plan_from_log(pre, decisions=n_pilot, **kw)
        name = f"round{rnd}"
        save_plan(self.store, name, plan, replace=True)
        client.set_rollout("canary", candidate=cand.version, cohorts=plan.treated_cohorts)
        played, frame, _ = self._phase(client, rnd, "pilot", n_pilot)
        client.set_rollout("live")
        if column == "adjusted":
            frame = frame.assign(adjusted=frame["reward"] - m.predict(self._x(frame)))
        res = analyze_from_log(plan, frame, margin=self.s.pilot_margin, seed=rnd, reward=column)
        res["outcome"] = column
        save_analysis(self.store, name, res)
        diff = self._unit_difference(rnd, played["contexts"], cand, live)
        cohorts = played["cohorts"]
        res["true_effect"] = float(np.mean([diff[cohorts == c].mean() for c in plan.cohorts]))
        res["covered"] = bool(res["ci_low"] <= res["true_effect"] <= res["ci_high"])
        res["power"] = plan.power
        res["decisions"] = n_pilot
        res["seconds"] = played["seconds"]
        return res

    def _unit_difference(self, rnd: int, ctx, cand: _Version, live: _Version) -> np.ndarray:
        """``[n]``: the true expected reward of each customer under the candidate's served distribution minus the live one's."""
        sc = self.world.scenario_at(rnd)
        table = World.table(sc, ctx)
        obs = ctx.obs.double().numpy()
        return ((_served(_pi(cand.policy, obs), self.s.epsilon) - _served(_pi(live.policy, obs), self.s.epsilon))
                * table).sum(1)

    def _shadow_summary(self, sh: pd.DataFrame, cand: _Version) -> dict:
        return {"decisions": len(sh), "agreement": float((sh["shadow_action_code"] == sh["action"]).mean()),
                "candidate_logged": bool(sh["shadow_version"].eq(cand.version).all())}

    # one round
    def round(self, client, rnd: int, state: dict) -> dict:
        s = self.s
        t_round = time.perf_counter()
        rec: dict = {"round": rnd}
        if s.plant_bad_policy_round == rnd:
            bad = self._bad_policy(rnd)
            self._register(bad)
            client.promote(bad.version)
            state["previous"], state["live"], state["check_guardrail"] = state["live"], bad, True
            rec["planted"] = bad.version
        live: _Version = state["live"]
        rec["live_version"], rec["live_label"] = live.version, live.label
        truth = self._truth(rnd, live)
        rec.update({"true_value": truth["value"], "oracle_value": truth["oracle"],
                    "share_of_oracle": truth["share_of_oracle"], "spend": truth["spend"],
                    "per_cohort_true": truth["per_cohort"]})
        for key in ("frozen", "start"):
            if state.get(key) is not None:
                t = self._truth(rnd, state[key])
                rec[f"{key}_value"], rec[f"{key}_share_of_oracle"] = t["value"], t["share_of_oracle"]
        self.log(f"round {rnd}: serving {s.decisions} with {live.label} (true share of oracle {truth['share_of_oracle']:.3f})")
        played, frame, info = self._phase(client, rnd, "live", s.decisions)
        live_frame = frame[frame["arm"] == "live"]
        rec["served"] = {"decisions": s.decisions, "rewarded": len(frame), "posted": played["posted"],
                         "export": played["export"], "seconds": played["seconds"],
                         "observed_mean_reward": float(frame["reward"].mean())}
        if state.get("check_guardrail") and state.get("previous") is not None:
            g = self._guardrail(rnd, live_frame, live, state["previous"], state.get("previous_frame"))
            rec["guardrail"] = g
            state["check_guardrail"] = False
            if g["rollback"]:
                client.rollback()
                state["live"] = state["previous"]
                rec["verdict"] = "rollback"
                rec["rolled_back_to"] = state["live"].version
                self.log(f"round {rnd}: guardrail rolled back {live.label} (worse in {g['worse_cohorts']})")
                rec["seconds"] = time.perf_counter() - t_round
                state["previous_frame"] = live_frame
                return rec
        served = pd.concat(self.frames, ignore_index=True)
        is_hold = _holdout_mask(served["decision_id"], s.holdout, s.seed)
        hold = served[is_hold].tail(s.gate_window)
        train = served[~is_hold].tail(s.train_window)
        cand, learn = self._learn(rnd, train)
        rec["learn"] = learn
        gate = self._gate(rnd, hold, cand, live)
        ct, lt = self._truth(rnd, cand), truth
        gate["true_candidate_value"] = ct["value"]
        gate["true_improvement"] = ct["value"] - lt["value"]
        gate["value_covered"] = bool(gate["candidate_value"]["ci_low"] <= ct["value"] <= gate["candidate_value"]["ci_high"])
        gate["improvement_covered"] = bool(gate["improvement"]["ci_low"] <= gate["true_improvement"]
                                           <= gate["improvement"]["ci_high"])
        rec["candidate"] = {"version": cand.version, "label": cand.label, "true_value": ct["value"],
                            "share_of_oracle": ct["share_of_oracle"]}
        rec["gate"] = gate
        self.log(f"round {rnd}: candidate true share {ct['share_of_oracle']:.3f}; gate improvement "
                 f"{gate['improvement']['value']:.3f} [{gate['improvement']['ci_low']:.3f}, "
                 f"{gate['improvement']['ci_high']:.3f}] (true {gate['true_improvement']:.3f})")
        if not gate["passed"]:
            rec["verdict"] = "hold (gate)"
        else:
            self._register(cand)
            if s.shadow_decisions:
                client.set_rollout("shadow", candidate=cand.version)
                _, sh, _ = self._phase(client, rnd, "shadow", s.shadow_decisions)
                client.set_rollout("live")
                rec["shadow"] = self._shadow_summary(sh, cand)
            pilot = self._pilot(client, rnd, live_frame, cand, live)
            rec["pilot"] = pilot
            pilot["pilot_verdict"] = pilot["verdict"]  # the pilot's interval alone (decision = "pilot")
            if s.decision == "combined":
                rec["decision"] = _combined_decision(gate, pilot, s.alpha, s.combined_weights)
                pilot["verdict"] = rec["decision"]["verdict"]
            self.log(f"round {rnd}: pilot {pilot['estimate']:.3f} [{pilot['ci_low']:.3f}, {pilot['ci_high']:.3f}] "
                     f"(true {pilot['true_effect']:.3f})"
                     + (f", combined z {rec['decision']['z']:.2f}" if "decision" in rec else "") + f": {pilot['verdict']}")
            if pilot["verdict"] == "promote":
                client.promote(cand.version)
                state["previous"], state["live"], state["check_guardrail"] = live, cand, True
                if state.get("frozen") is None:
                    state["frozen"] = cand
                rec["verdict"] = "promote"
            else:
                rec["verdict"] = f"hold (pilot: {pilot['verdict']})"
        rec["promoted_true_gain"] = (rec["candidate"]["true_value"] - rec["true_value"]
                                     if rec["verdict"] == "promote" else None)
        state["previous_frame"] = live_frame
        rec["seconds"] = time.perf_counter() - t_round
        return rec


# -- continuous actions (pricing: a Beta price multiplier; allocation: a Dirichlet budget split) ---------


def _softplus_inv(y: np.ndarray) -> np.ndarray:
    """x with softplus(x) = y (y > 0): x = y + log(−expm1(−y))."""
    y = np.asarray(y, dtype=np.float64)
    return y + np.log(-np.expm1(-y))


class _ContinuousLoop(_Loop):
    """The same rounds for continuous actions (module doc), with these parts changed:

    * served density: the policy file carries ``continuous_epsilon = loop.epsilon``, so the service
      serves q = (1 − ε) π + ε u (u uniform on [low, high] / Dirichlet(1)) and logs q(a | x) as the
      propensity (:mod:`grpokit.policy.deployed`);
    * learn: m(x, a) on [features, action value(s)] (:class:`~grpokit.offline.continuous.ContinuousOutcomeModel`)
      and GRPO with the scenario's Beta / Dirichlet head on m (:func:`~grpokit.offline.continuous_learn.learn_continuous`);
    * gate and guardrail: per-row continuous DR terms ψ_i = (1/S) Σ_s m̃(x_i, a_is) + w_i (r_i − m̃(x_i, a_i)),
      a_is ~ q_target, w_i = q_target(a_i | x_i) / q_logged(a_i | x_i), m̃ cross-fitted;
    * truth: Monte-Carlo means of the closed-form expected reward over draws of q (:class:`ContinuousWorld`);
    * start rules: the best fixed price / split, the list price / equal split (``reference``), or
      uniform, as a Beta / Dirichlet of total concentration ``start_concentration`` around it.
    """

    continuous = True

    def __init__(self, cfg: LoopConfig, out: Path, progress: bool):
        from grpokit.loop.world import ContinuousWorld

        self.cfg, self.s, self.out, self.progress = cfg, cfg.loop, out, progress
        self.world = ContinuousWorld(cfg.scenario, eval_size=self.s.eval_size, seed=self.s.seed,
                                     truth_samples=self.s.truth_samples)
        sc = self.world.sc
        self.features, self.labels, self.groups = sc.feature_names, sc.action_names, sc.group_names
        self.A = None
        self.spec = dict(sc.action_spec)
        self.store = out / "store.duckdb"
        self.frames: list[pd.DataFrame] = []
        self.rounds: list[dict] = []
        self.n_versions = 0

    # versions
    def _head(self):
        from grpokit.offline.continuous_learn import make_continuous_head

        return make_continuous_head(self.spec, self.cfg.policy.head_params)

    def _save(self, policy, label: str) -> _Version:
        from grpokit.policy.deployed import DeployedPolicy
        from grpokit.policy.io import save_policy

        self.n_versions += 1
        path = self.out / "policies" / f"v{self.n_versions}_{label}.pt"
        save_policy(policy, path, {"feature_names": list(self.features), "action_labels": list(self.labels),
                                   "group_labels": list(self.groups), "loop_label": label,
                                   "continuous_epsilon": float(self.s.epsilon)})
        return _Version(policy, path, DeployedPolicy.load(path).version, label)

    def _fixed_policy(self, action: np.ndarray | None):
        """A policy that serves Beta / Dirichlet of total concentration c around ``action`` (None: uniform)."""
        from grpokit.policy.heads import BetaHead
        from grpokit.policy.network import MLPTorso, Policy

        sc = self.world.sc
        head = self._head()
        p = Policy(MLPTorso(sc.obs_dim, self.cfg.policy.hidden, self.cfg.policy.activation), head)
        c = self.s.start_concentration
        if isinstance(head, BetaHead):
            unit = 0.5 if action is None else (float(action) - head.low) / (head.high - head.low)
            params = np.array([1.0, 1.0]) if action is None else np.array([c * unit, c * (1 - unit)])
        else:
            w = np.asarray(action, dtype=np.float64) if action is not None else None
            params = np.ones(head.n_components) if w is None else c * w
        raw = _softplus_inv(np.maximum(params - head.floor, 1e-12))
        with torch.no_grad():
            p.out.weight.zero_()
            p.out.bias.copy_(torch.as_tensor(raw, dtype=torch.float32))
        return p

    def _start_policy(self) -> _Version:
        sc = self.world.sc
        if self.s.start_policy == "uniform":
            return self._save(self._fixed_policy(None), "uniform")
        if self.s.start_policy == "reference":
            a = sc.reference_action().numpy()
            return self._save(self._fixed_policy(a), "reference_" + ("list_price" if sc.name == "pricing" else "equal_split"))
        a = sc.best_fixed_action(self.s.seed + 99).numpy()
        tag = f"{float(a):.3f}" if a.ndim == 0 else "_".join(f"{v:.2f}" for v in a)
        return self._save(self._fixed_policy(a), f"best_fixed_{tag}")

    def _bad_policy(self, rnd: int) -> _Version:
        """Fault injection: trained on the outcome model with its sign flipped (a classic bug)."""
        from grpokit.offline.continuous import ContinuousOutcomeModel
        from grpokit.offline.continuous_learn import learn_continuous

        train = pd.concat(self.frames, ignore_index=True).tail(self.s.train_window)
        x, a, r = self._x(train), self._actions(train), train["reward"].to_numpy(np.float64)
        m = ContinuousOutcomeModel(self.s.outcome_model, seed=self.s.seed, **self.s.outcome_params).fit(x, a, r, crossfit=False)

        class _Flipped:
            def predict(self, x, a):
                return -m.predict(x, a)

        grpo = self.cfg.grpo.model_copy(update={"steps": 300, "lr": 0.03})
        policy, _ = learn_continuous(x, _Flipped(), self._head(), grpo, self.cfg.policy)
        return self._save(policy, "planted_bad_sign_flipped")

    # data
    @staticmethod
    def _actions(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(frame["action_value"].tolist(), dtype=np.float64)

    def _samples(self, v: _Version, x: np.ndarray, n: int, seed: int) -> np.ndarray:
        from grpokit.offline.continuous_learn import sample_served

        return sample_served(v.policy, x, n, self.s.epsilon, seed)

    # truth
    def _unit(self, ctx, v: _Version) -> np.ndarray:
        # common random numbers: every policy is scored with the same seed
        return self.world.unit_values(ctx, lambda obs, n: self._samples(v, obs, n, self.s.seed + 4242))

    def _truth(self, rnd: int, v: _Version) -> dict:
        return self.world.value(rnd, self._unit(self.world.eval_contexts(rnd), v))

    def _unit_difference(self, rnd: int, ctx, cand: _Version, live: _Version) -> np.ndarray:
        return self._unit(ctx, cand) - self._unit(ctx, live)

    # steps
    def _learn(self, rnd: int, train: pd.DataFrame) -> tuple[_Version, dict]:
        from grpokit.offline.continuous import ContinuousOutcomeModel
        from grpokit.offline.continuous_learn import learn_continuous

        x, a, r = self._x(train), self._actions(train), train["reward"].to_numpy(np.float64)
        g = train["group"].map({n: i for i, n in enumerate(self.groups)}).to_numpy(np.int64)
        t0 = time.perf_counter()
        m = ContinuousOutcomeModel(self.s.outcome_model, seed=self.s.seed + rnd, **self.s.outcome_params).fit(x, a, r, crossfit=False)
        grpo = self.cfg.grpo.model_copy(update={"seed": self.cfg.grpo.seed + rnd})
        policy, summary = learn_continuous(x, m, self._head(), grpo, self.cfg.policy, group=g, n_groups=len(self.groups))
        v = self._save(policy, f"r{rnd}_candidate")
        return v, {"rows": len(train), "seconds": time.perf_counter() - t0, "steps": summary["steps"]}

    def _dr_rows(self, frame: pd.DataFrame, versions: list, seed: int) -> list[np.ndarray]:
        """Per-row continuous DR terms of each version's served density on ``frame`` (class doc), one
        cross-fitted m(x, a) (seeded ``seed``) for all, ``dm_samples`` draws of each target per row."""
        from grpokit.offline.continuous import ContinuousOutcomeModel, density_ratio
        from grpokit.offline.continuous_learn import served_log_density_of

        x, a, r = self._x(frame), self._actions(frame), frame["reward"].to_numpy(np.float64)
        lq = np.log(frame["pscore"].to_numpy(np.float64))
        m = ContinuousOutcomeModel(self.s.outcome_model, seed=seed, **self.s.outcome_params).fit(x, a, r)
        m_logged = m.predict_crossfit(x, a)
        out = []
        for j, v in enumerate(versions):
            w = density_ratio(served_log_density_of(v.policy, x, a, self.s.epsilon), lq)
            dm = m.predict_crossfit(x, self._samples(v, x, self.s.dm_samples, seed * 31 + j)).mean(1)
            out.append(dm + w * (r - m_logged))
        return out

    def _shadow_summary(self, sh: pd.DataFrame, cand: _Version) -> dict:
        # the service logs the candidate's density of its own draw, not its action, for continuous heads
        return {"decisions": len(sh), "candidate_logged": bool(sh["shadow_version"].eq(cand.version).all()),
                "shadow_density_logged": bool(sh["shadow_propensity"].notna().all())}


def _coverage(rounds: list[dict]) -> dict:
    hits = []
    for r in rounds:
        g = r.get("gate")
        if g:
            hits += [("off_policy_value", g["value_covered"]), ("off_policy_improvement", g["improvement_covered"])]
        if r.get("pilot"):
            hits.append(("pilot", r["pilot"]["covered"]))
    out = {"intervals": len(hits), "covered": int(sum(h for _, h in hits))}
    for kind in ("off_policy_value", "off_policy_improvement", "pilot"):
        k = [h for n, h in hits if n == kind]
        out[kind] = {"intervals": len(k), "covered": int(sum(k))}
    out["share"] = out["covered"] / out["intervals"] if hits else None
    return out


def run_loop(config: LoopConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the closed loop (module doc); returns ``summary.json``'s content."""
    from grpokit.loop.report import write_loop_report
    from grpokit.loop.service import ServiceProcess

    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out} already holds a loop run: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.model_dump_json(indent=1))
    t0 = time.perf_counter()
    lp = (_ContinuousLoop if config.scenario.get("name", "marketing") in CONTINUOUS_SCENARIOS else _Loop)(config, out, progress)
    start = lp._start_policy()
    state = {"live": start, "start": start, "previous": None, "frozen": None}
    svc = ServiceProcess(lp.store, start.path, epsilon=config.loop.epsilon, seed=config.loop.seed,
                         flush_interval_s=config.loop.flush_interval_s)
    import signal
    import sys
    import threading

    from threadpoolctl import threadpool_limits

    if threading.current_thread() is threading.main_thread():  # SIGTERM unwinds, so the server is stopped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # one thread for OpenMP/BLAS (the GBM outcome models, torch): on a shared machine oversubscribed
    # OpenMP threads spin and make a fit several times slower
    with svc, threadpool_limits(1):
        client = svc.client
        for rnd in range(config.loop.rounds):
            rec = lp.round(client, rnd, state)
            lp.rounds.append(rec)
            atomic_write_json(out / "rounds.partial.json", {"rounds": lp.rounds})
        final_round = config.loop.rounds
        live = state["live"]
        ft = lp._truth(final_round if config.loop.drift else 0, live)
        served_version = client.policy().get("version")
    final = {"live_version": live.version, "live_label": live.label, "serving_version": served_version,
             "true_value": ft["value"], "share_of_oracle": ft["share_of_oracle"], "oracle_value": ft["oracle"],
             "world_round": final_round if config.loop.drift else 0}
    for key in ("frozen", "start"):
        if state.get(key) is not None:
            t = lp._truth(final["world_round"], state[key])
            final[f"{key}_value"], final[f"{key}_share_of_oracle"] = t["value"], t["share_of_oracle"]
    bad = [r["round"] for r in lp.rounds if r.get("verdict") == "promote" and r["promoted_true_gain"] < 0]
    summary = {"scenario": config.scenario.get("name", "marketing"), "seed": config.loop.seed, "rounds": lp.rounds, "final": final,
               "promotions": sum(r.get("verdict") == "promote" for r in lp.rounds),
               "rollbacks": sum(r.get("verdict") == "rollback" for r in lp.rounds),
               "promoted_worse": bad, "coverage": _coverage(lp.rounds), "wall_seconds": time.perf_counter() - t0,
               "service": {"url": svc.url, "store": str(lp.store)}}
    write_loop_report(out / "report.html", summary)
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "summary.json", summary)
    (out / "rounds.partial.json").unlink(missing_ok=True)
    return summary
