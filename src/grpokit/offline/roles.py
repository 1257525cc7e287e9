"""Which column of a log plays which role, and why: explicit roles, no silent leakage.

:func:`infer_roles` gives every column of a raw log one role -- ``feature``, ``action``,
``reward``, ``pscore``, ``group``, ``id``, ``timestamp``, ``outcome``, ``position`` or
``ignored`` -- with the reason, and the kind of a feature (``number``, ``bool``, ``category``).
When the schema lists no ``features``, the features are every column no other role takes,
*except* columns that look like outcomes of the decision or identifiers; those are listed with a
warning and never used unless named in ``features``:

* names: the reward's own components (``converted``, ``revenue``, ``profit``, ``margin``,
  ``clicked``, ... -- a word of the name; names that also carry a history word such as
  ``avg``/``last``/``90d`` are pre-decision aggregates and pass), ``*_id`` / ``id`` / ``uuid``,
  ground truth (``true_*``, ``oracle*``);
* data: a column whose correlation with the reward *within each logged action* is near 1
  (``|rho| >= 0.95``, row-weighted over the actions: it moves with the outcome, it is not a cause
  of the decision); an integer (or text) column with a distinct value on every row (an id);
* timestamps (datetime columns, or text that parses as dates) are excluded unless named in
  ``features``; constant columns are ignored. Missing values in a feature are an error (the
  validation names the row): fill them or leave the column out.

Text and boolean columns become features (``category``: one-hot over the most frequent levels
plus an ``other`` level, by :class:`grpokit.policy.features.FeatureEncoder`; ``bool``: 0/1).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

__all__ = ["ColumnRole", "infer_roles", "column_kind", "category_values", "leak_reason", "OUTCOME_WORDS", "LEAK_CORRELATION"]

#: words of a column name that mark an outcome of the decision (post-treatment)
OUTCOME_WORDS = frozenset({
    "converted", "conversion", "conversions", "convert", "revenue", "revenues", "profit", "profits", "margin",
    "gmv", "purchased", "purchase", "bought", "clicked", "click", "clicks", "churned", "churn", "redeemed",
    "redemption", "outcome", "outcomes", "reward", "rewards", "uplift", "response", "responded", "label",
    "target", "sales", "income", "payoff", "result",
})
#: words that mark a pre-decision history aggregate (``revenue_90d``, ``avg_profit``, ``last_purchase``)
HISTORY_WORDS = frozenset({"avg", "mean", "last", "prev", "previous", "past", "hist", "historical", "prior",
                           "lifetime", "ltv", "since", "before", "total", "sum"})
_WINDOW = re.compile(r"^\d+[dwmy]$|^\d+(days|weeks|months)$")
_ID = re.compile(r"(^|_)(id|uuid|guid|key)$|^(id|uuid|guid)_|[a-z](Id|ID)$")
_TRUTH = re.compile(r"^(true|truth|oracle|ground_truth|gt)(_|$)|_(truth|oracle)$")
#: |correlation with the reward within each action| at or above this marks an outcome
LEAK_CORRELATION = 0.95
_MIN_ROWS_UNIQUE = 50


@dataclass
class ColumnRole:
    """One column's role: ``kind`` of data, ``reason`` in words, ``warning`` for a suspected leak or id."""

    column: str
    role: str
    kind: str
    reason: str
    warning: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def column_kind(s: pd.Series) -> str:
    """``bool``, ``number``, ``datetime``, ``category`` (text / labels) or ``empty``."""
    if ptypes.is_bool_dtype(s):
        return "bool"
    if ptypes.is_numeric_dtype(s) and not ptypes.is_complex_dtype(s):
        return "number"
    if ptypes.is_datetime64_any_dtype(s) or ptypes.is_timedelta64_dtype(s):
        return "datetime"
    vals = s.dropna()
    if len(vals) == 0:
        return "empty"
    if all(isinstance(v, (bool, np.bool_)) for v in vals.iloc[:1000]):
        return "bool"
    if any(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return "number"  # numbers (possibly mixed with text: validated as numbers, an error naming the row)
    sample = vals.astype(str).iloc[:200]
    if sample.str.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$").all():
        return "datetime"
    return "category"


def _name_leak(name: str, reward: str | None, outcomes: list[str]) -> str | None:
    words = _words(name)
    if _TRUTH.search(name.lower()):
        return "its name marks ground truth (true_*/oracle): not known at decision time"
    if name in outcomes:
        return "it is one of the schema's outcomes"
    if any(w in HISTORY_WORDS or _WINDOW.match(w) for w in words):
        return None  # a history aggregate: known before the decision
    if reward and reward.lower() in name.lower() and name != reward:
        return f"its name contains the reward's name ({reward!r}): a component of the reward"
    hit = [w for w in words if w in OUTCOME_WORDS]
    if hit:
        return f"its name ({hit[0]!r}) looks like an outcome of the decision, known only after it"
    return None


def _id_reason(name: str, s: pd.Series, kind: str) -> str | None:
    if _ID.search(name) or name.lower() == "id":
        return "its name looks like an identifier"
    n = len(s)
    if n >= _MIN_ROWS_UNIQUE and kind in ("number", "category") and not s.isna().any():
        if kind == "number":
            if not ptypes.is_numeric_dtype(s):
                return None
            v = s.to_numpy()
            if not (ptypes.is_integer_dtype(s) or np.all(np.mod(v.astype(np.float64), 1) == 0)):
                return None
        if s.nunique() == n:
            return "a distinct value on every row: an identifier, not a feature"
    return None


def _reward_correlation(x: np.ndarray, reward: np.ndarray, action: np.ndarray) -> float:
    """Row-weighted mean over actions of |Pearson(x, reward)| within the rows of each action."""
    total, weight = 0.0, 0
    for a in pd.unique(action):
        rows = action == a
        if rows.sum() < 10:
            continue
        xa, ra = x[rows], reward[rows]
        if xa.std() == 0 or ra.std() == 0:
            continue
        total += abs(float(np.corrcoef(xa, ra)[0, 1])) * int(rows.sum())
        weight += int(rows.sum())
    return total / weight if weight else 0.0


def leak_reason(df: pd.DataFrame, column: str, reward: str | None, action: str | None,
                outcomes: list[str] = ()) -> str | None:
    """Why ``column`` looks like an outcome (post-decision) column, or None."""
    reason = _name_leak(column, reward, list(outcomes))
    if reason:
        return reason
    if reward is None or action is None or reward not in df.columns or action not in df.columns:
        return None
    s = df[column]
    kind = column_kind(s)
    if not (ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s)) or s.isna().any():
        return None
    r = pd.to_numeric(df[reward], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(r)):
        return None
    x = s.to_numpy(dtype=np.float64)
    rho = _reward_correlation(x, r, df[action].astype(str).to_numpy())
    if rho >= LEAK_CORRELATION:
        return (f"its correlation with the reward within each logged action is {rho:.3f} (>= {LEAK_CORRELATION}): "
                "it moves with the outcome")
    return None


def infer_roles(df: pd.DataFrame, schema, taken: dict[str, str | None]) -> list[ColumnRole]:
    """The role of every column of ``df``.

    ``schema``: the :class:`~grpokit.offline.schema.LogSchema`; ``taken``: role -> column of the
    optional single-column roles that the log resolved (decision_id, group, reward, position,
    timestamp; None when absent). With ``schema.features`` set, exactly those columns are features
    (a suspected leak among them is kept, with a warning: you asked for it).
    """
    owner: dict[str, tuple[str, str]] = {}
    names = {"decision_id": "id", "group": "group", "reward": "reward", "position": "position",
             "timestamp": "timestamp"}
    for role, col in taken.items():
        if col is not None:
            owner[col] = (names.get(role, role), f"the schema's {role}")
    owner[schema.action] = ("action", "the schema's action")
    owner[schema.pscore] = ("pscore", "the schema's pscore (logging propensity)")
    for c in schema.outcomes:
        owner[c] = ("outcome", "listed in the schema's outcomes")
    reward = taken.get("reward")
    explicit = set(schema.features or [])
    out: list[ColumnRole] = []
    for col in df.columns:
        s = df[col]
        kind = column_kind(s)
        if col in explicit:
            leak = leak_reason(df, col, reward, schema.action, schema.outcomes)
            idr = _id_reason(col, s, kind)
            why = leak or idr
            role_note = f" (also the {owner[col][0]})" if col in owner else ""
            if kind == "datetime":
                reason = "named in features: a timestamp, used as days since 1970-01-01" + role_note
            else:
                reason = "named in features" + role_note
            if why:
                reason += f"; WARNING: {why} -- keep it only if it is known when the decision is made"
            out.append(ColumnRole(col, "feature", kind, reason, warning=bool(why)))
            continue
        if col in owner:
            role, why = owner[col]
            out.append(ColumnRole(col, role, kind, why))
            continue
        if schema.features is not None:
            leak = leak_reason(df, col, reward, schema.action, schema.outcomes)
            note = f"; it looks like an outcome ({leak})" if leak else ""
            out.append(ColumnRole(col, "ignored", kind, "not listed in the schema's features" + note))
            continue
        leak = leak_reason(df, col, reward, schema.action, schema.outcomes)
        if leak:
            out.append(ColumnRole(col, "outcome", kind, f"left out: {leak}; name it in features to use it anyway",
                                  warning=True))
            continue
        idr = _id_reason(col, s, kind)
        if idr:
            out.append(ColumnRole(col, "id", kind, f"left out: {idr}; name it in features to use it anyway",
                                  warning=True))
            continue
        if kind == "datetime":
            out.append(ColumnRole(col, "timestamp", kind,
                                  "left out: a timestamp (name it in features to use it as days since 1970)"))
            continue
        if kind == "empty":
            out.append(ColumnRole(col, "ignored", kind, "left out: every value is missing"))
            continue
        if kind == "category" and _mixed(s):
            # numbers and text in one column: validated as numbers, so the error names the odd row
            out.append(ColumnRole(col, "feature", "number", "number (mixed with text: an error)"))
            continue
        if s.nunique() <= 1 and not s.isna().any():
            out.append(ColumnRole(col, "ignored", kind, "left out: constant (one value on every row)"))
            continue
        how = {"number": "number, standardized", "bool": "boolean, 0/1",
               "category": f"category ({s.nunique()} levels), one-hot (at most 20 columns, rare levels -> 'other')"}[kind]
        out.append(ColumnRole(col, "feature", kind, how))
    return out


def _mixed(s: pd.Series) -> bool:
    if ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s):
        return False
    vals = s.dropna().to_numpy(dtype=object)
    numberish = np.fromiter((_numberish(v) for v in vals), bool, len(vals))
    return bool(numberish.any() and not numberish.all())


def _numberish(v) -> bool:
    if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
        return True
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return True
    return False


def category_values(s: pd.Series, column: str, rows) -> np.ndarray:
    """A text feature as an object array of ``str`` labels; a missing label is an error naming the row.

    ``rows``: the validation's row words (:class:`grpokit.offline.io._Rows`).
    """
    vals = s.to_numpy(dtype=object)
    rows.first(column, pd.isna(vals), lambda v: f"missing category label ({v!r}) in a feature column", vals,
               hint="fill it (e.g. with 'unknown') or leave the column out of features")
    return np.asarray([str(v) for v in vals], dtype=object)
