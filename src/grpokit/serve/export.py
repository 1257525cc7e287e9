"""The served log for the offline layer: decisions joined with their rewards, in the log schema.

One row per decision that has a reward to learn from, with the columns
:func:`grpokit.offline.io.read_log` reads by default: ``decision_id`` (the event id),
``timestamp``, ``group`` (the cohort, when decisions carry one), the context's fields (numbers and
booleans as float columns, the features; text fields as text columns, which the default schema
leaves out), ``action`` (int code), ``reward``, ``pscore`` (the propensity under the served
distribution, exploration included), and text columns ``action_label``, ``policy_version``,
``arm``, ``unit_id``, ``reward_source``.

The reward of a decision: under ``first`` the first counted reward, under ``sum`` the sum of the
counted ones (counted = on time, not a duplicate, activated). A decision with no counted reward
whose window (decision time, or activation time if deferred, + ``window_s``) has closed gets
``reward.default`` when it is set (``reward_source = "default"``) and is left out otherwise; a
decision whose window is still open, or a deferred one never activated, is left out. Late rewards
are never used. ``info`` counts every kind of row left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from grpokit.serve.config import RewardConfig
from grpokit.serve.tables import connect

__all__ = ["served_frame", "served_log", "export_served"]

_SQL = """
WITH r AS (
  SELECT event_id,
         count(*) FILTER (WHERE counted) AS n_counted,
         sum(value) FILTER (WHERE counted) AS r_sum,
         arg_min(value, received_at) FILTER (WHERE counted) AS r_first,
         count(*) FILTER (WHERE late) AS n_late,
         count(*) FILTER (WHERE duplicate) AS n_duplicate
  FROM rewards GROUP BY event_id)
SELECT d.event_id, d.ts, d.policy_version, d.arm, d.unit_id, d.cohort, d.context, d.action_code, d.action_label, d.action_value,
       d.propensity, d.deferred, d.shadow_version, d.shadow_action_code, d.shadow_propensity, a.activated_at,
       coalesce(r.n_counted, 0) AS n_counted, r.r_sum, r.r_first, coalesce(r.n_late, 0) AS n_late,
       coalesce(r.n_duplicate, 0) AS n_duplicate
FROM decisions d LEFT JOIN activations a USING (event_id) LEFT JOIN r USING (event_id)
"""


def _expand(contexts: pd.Series) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The context JSON as columns: ``(frame, feature columns, dropped columns)``."""
    records = [json.loads(c) for c in contexts]
    frame = pd.DataFrame.from_records(records, index=contexts.index)
    features, dropped = [], []
    for col in list(frame.columns):
        s = frame[col]
        if s.isna().any():
            dropped.append(col)  # not in every context (several versions with different fields)
            frame = frame.drop(columns=col)
            continue
        if all(isinstance(v, (bool, int, float, np.number)) for v in s):
            frame[col] = s.astype(np.float64)
            features.append(col)
        else:
            frame[col] = s.astype(str)
    return frame, features, dropped


def served_frame(store: str | Path, reward: RewardConfig | None = None, *, version: str | None = None,
                 arms: list[str] | None = None, now: pd.Timestamp | None = None, shadow: bool = False,
                 lock_timeout_s: float = 30.0, continuous: bool = False) -> tuple[pd.DataFrame, dict]:
    """``(frame, info)``: the served log (see the module docstring) and counts of what was left out.

    ``continuous=True`` reads a log of continuous actions (Beta/Dirichlet heads): ``action_value``
    (the served number, or list of shares) replaces ``action``, and ``pscore`` is the logged density.
    """
    reward = reward or RewardConfig()
    con = connect(store, lock_timeout_s)
    try:
        where, params = [], []
        if version is not None:
            where.append("d.policy_version = ?")
            params.append(version)
        if arms:
            where.append("d.arm IN (" + ", ".join("?" for _ in arms) + ")")
            params.extend(arms)
        sql = _SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY d.ts, d.event_id"
        df = con.execute(sql, params).df()
        actions = {}
        if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'policy_versions'").fetchone()[0]:
            actions = {v: json.loads(a) if a else None
                       for v, a in con.execute("SELECT version, actions FROM policy_versions").fetchall()}
    finally:
        con.close()
    now = pd.Timestamp.now(tz="UTC").tz_localize(None) if now is None else now
    info = {"decisions": int(len(df))}
    if df.empty:
        raise ValueError(f"the store {store} has no served decisions" + (f" of version {version!r}" if version else ""))
    if df["action_code"].isna().any() and not continuous:
        raise ValueError("the log holds continuous actions (Beta/Dirichlet heads), which the offline layer's "
                         "categorical estimators do not take; read the decisions table directly")
    start = df["activated_at"].where(df["deferred"], df["ts"])
    not_activated = df["deferred"] & df["activated_at"].isna()
    closed = (start + pd.to_timedelta(reward.window_s, unit="s")) <= now
    observed = df["n_counted"] > 0
    value = df["r_first"] if reward.aggregation == "first" else df["r_sum"]
    use_default = ~observed & closed & ~not_activated & (reward.default is not None)
    keep = (observed | use_default) & ~not_activated
    info.update({
        "rows": int(keep.sum()), "observed": int((observed & keep).sum()), "default_reward": int(use_default.sum()),
        "left_out_pending": int((~observed & ~closed & ~not_activated).sum()),
        "left_out_no_reward": int((~observed & closed & ~not_activated & (reward.default is None)).sum()),
        "left_out_not_activated": int(not_activated.sum()),
        "late_rewards_ignored": int(df["n_late"].sum()), "duplicate_rewards_ignored": int(df["n_duplicate"].sum()),
        "aggregation": reward.aggregation,
    })
    df = df[keep].copy()
    value = value[keep].where(observed[keep], reward.default if reward.default is not None else np.nan)
    if df.empty:
        raise ValueError(f"no served decision has a reward yet ({info})")
    ctx, features, dropped = _expand(df["context"])
    info["features"] = features
    info["dropped_columns"] = dropped
    out = pd.DataFrame({"decision_id": df["event_id"].astype(str).to_numpy(), "timestamp": df["ts"].to_numpy()},
                       index=df.index)
    if df["cohort"].notna().all():
        out["group"] = df["cohort"].astype(str)
    out = pd.concat([out, ctx.drop(columns=[c for c in ("group", "decision_id") if c in ctx.columns])], axis=1)
    if continuous:
        vals = [json.loads(v) for v in df["action_value"]]
        out["action_value"] = [json.loads(v) if isinstance(v, str) else v for v in vals]
    else:
        out["action"] = df["action_code"].astype(np.int64)
    out["reward"] = value.astype(np.float64)
    out["pscore"] = df["propensity"].astype(np.float64)
    out["action_label"] = df["action_label"].astype(str) if not continuous else ""
    out["policy_version"] = df["policy_version"].astype(str)
    out["arm"] = df["arm"].astype(str)
    out["unit_id"] = df["unit_id"].astype(object).where(df["unit_id"].notna(), "").astype(str)
    out["reward_source"] = np.where(observed[keep], "observed", "default")
    if shadow:
        out["shadow_version"] = df["shadow_version"]
        out["shadow_action_code"] = df["shadow_action_code"]
        out["shadow_propensity"] = df["shadow_propensity"]
    labels = [actions.get(v) for v in df["policy_version"].unique()]
    labels = [x for x in labels if x]
    info["n_actions"] = len(labels[0]) if labels and all(x == labels[0] for x in labels) else None
    info["action_labels"] = labels[0] if info["n_actions"] else None
    return out.reset_index(drop=True), info


def served_log(store: str | Path, reward: RewardConfig | None = None, **kw):
    """The served log as validated :class:`~grpokit.offline.schema.LoggedDecisions` (features: the
    context's numeric fields; action labels and n_actions from the serving versions)."""
    from grpokit.offline.io import validate_log
    from grpokit.offline.schema import LogSchema

    frame, info = served_frame(store, reward, **kw)
    return validate_log(frame, _schema(frame, info)), info


def _schema(frame: pd.DataFrame, info: dict):
    from grpokit.offline.schema import LogSchema

    kw = {"features": info["features"]}
    if info.get("n_actions"):
        kw["n_actions"] = info["n_actions"]
    if "group" not in frame.columns:
        kw["group"] = None
    return LogSchema(**kw)


def export_served(store: str | Path, out: str | Path | None = None, *, dataset: str | None = None,
                  reward: RewardConfig | None = None, replace: bool = False, **kw) -> dict:
    """Write the served log to a Parquet file (``out``) and/or import it into the store as ``dataset``
    (for ``grpokit learn --dataset NAME``); returns ``info``."""
    frame, info = served_frame(store, reward, **kw)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(out)
        info["out"] = str(out)
    if dataset is not None:
        import time

        from grpokit.store import Store, StoreError

        deadline = time.monotonic() + 30.0
        while True:
            try:
                with Store(store) as st:
                    st.import_log(frame, dataset, _schema(frame, info), replace=replace)
                break
            except StoreError as err:
                if "another process" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        info["dataset"] = dataset
    return info
