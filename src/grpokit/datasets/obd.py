"""Loader for the Open Bandit Dataset (OBD) and the BTS policy's action distribution.

Layout expected under ``root`` (the layout of the Open Bandit Pipeline's data folder)::

    root/<behavior>/<campaign>/<campaign>.csv
    root/<behavior>/<campaign>/item_context.csv
    root/bts/<campaign>/prior_bts.json

``behavior`` is ``"random"`` (uniform random logging) or ``"bts"`` (Bernoulli Thompson
Sampling logging); ``campaign`` is ``"all"``, ``"men"`` or ``"women"``.

Feature engineering follows obp's ``OpenBanditDataset.pre_process`` with two documented
differences:

* ``context`` = one-hot ``user_feature_0..3`` (all levels kept by default; obp uses
  ``drop_first=True``, available here as ``drop_first=True``) followed by the n_items numeric
  ``user-item_affinity_<i>`` columns, as float64.

The number of items is read from the data, not assumed: it is the number of rows of
``item_context.csv`` (item ids exactly 0..n_items-1), and the log must hold exactly the
``user-item_affinity_0..n_items-1`` columns (OBD's ``all`` campaign has 80 items, ``men`` 34,
``women`` 46). A mismatch between the two files is an error naming both counts.
* ``action_context`` = numeric ``item_feature_0`` followed by one-hot ``item_feature_1..3``
  (obp label-encodes these instead). Categories are ordered by first appearance in item-id
  order, not by hash: the hashed strings differ between the random and the bts folders
  while the partition of items is the same, so this ordering makes ``action_context``
  identical for both logs.

``position`` is made 0-based (the CSV holds 1..len_list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "BEHAVIORS",
    "CAMPAIGNS",
    "OBD_N_ACTIONS",
    "OBD_LEN_LIST",
    "OBDLog",
    "load_obd",
    "load_bts_prior",
    "bts_action_dist",
    "obd_target_probs",
]

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
OBD_N_ACTIONS = 80  #: items of the "all" campaign (men: 34, women: 46); load_obd reads the count from the data
OBD_LEN_LIST = 3

_USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
_ITEM_CAT_FEATURES = ("item_feature_1", "item_feature_2", "item_feature_3")
_REQUIRED_LOG_COLS = ("timestamp", "item_id", "position", "click", "propensity_score")
_AFFINITY_PREFIX = "user-item_affinity_"


@dataclass
class OBDLog:
    """One OBD log (one behaviour policy, one campaign), preprocessed.

    ``context`` columns are named in ``context_names``: first ``user_feature_<j>=<level>``
    one-hot columns, then ``user-item_affinity_<i>`` numeric columns.
    """

    n_rounds: int
    n_actions: int
    len_list: int
    context: np.ndarray  # [n, d] float64
    context_names: list[str]
    action: np.ndarray  # [n] int64
    position: np.ndarray  # [n] int64, 0-based
    reward: np.ndarray  # [n] float64 (click)
    pscore: np.ndarray  # [n] float64 (logged propensity_score)
    timestamp: np.ndarray  # [n] datetime64[ns] (UTC)
    action_context: np.ndarray  # [n_actions, k] float64
    action_context_names: list[str]
    item_context: pd.DataFrame
    behavior: str
    campaign: str
    user_categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def on_policy_value(self) -> float:
        """Mean click of the logged data: the behaviour policy's on-policy value."""
        return float(self.reward.mean()) if self.n_rounds else float("nan")

    @property
    def dim_context(self) -> int:
        return int(self.context.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """Generic-log view: decision_id, action, reward, pscore, position, timestamp,
        then the context columns (named as in ``context_names``)."""
        base = pd.DataFrame(
            {
                "decision_id": np.arange(self.n_rounds, dtype=np.int64),
                "action": self.action,
                "reward": self.reward,
                "pscore": self.pscore,
                "position": self.position,
                "timestamp": self.timestamp,
            }
        )
        ctx = pd.DataFrame(self.context, columns=self.context_names)
        return pd.concat([base, ctx], axis=1)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_root(root: str | Path) -> Path:
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str or Path, got {type(root).__name__}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"OBD root folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"OBD root is not a folder: {root}")
    return root


def _one_hot(
    df: pd.DataFrame,
    cols: Sequence[str],
    categories: Mapping[str, Sequence[str]] | None,
    drop_first: bool,
    order: str,
) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """One-hot encode ``cols``; levels sorted (order="sorted") or by first appearance.

    With ``categories`` given, those levels (in that order) are used; unseen values
    become an all-zero row.
    """
    blocks, names, used = [], [], {}
    for c in cols:
        values = df[c].astype(str).to_numpy()
        if categories is not None and c in categories:
            levels = [str(v) for v in categories[c]]
        elif order == "sorted":
            levels = sorted(set(values))
        else:
            levels = list(dict.fromkeys(values))
        used[c] = list(levels)
        enc_levels = levels[1:] if drop_first else levels
        index = {lev: i for i, lev in enumerate(enc_levels)}
        block = np.zeros((len(values), len(enc_levels)), dtype=np.float64)
        codes = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
        hit = codes >= 0
        block[np.nonzero(hit)[0], codes[hit]] = 1.0
        blocks.append(block)
        names.extend(f"{c}={lev}" for lev in enc_levels)
    mat = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0))
    return mat, names, used


def _read_item_context(path: Path, n_actions: int | None = None) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Item features; ``n_actions=None``: as many items as rows (ids must be 0..rows-1)."""
    if not path.is_file():
        raise FileNotFoundError(f"OBD item context file not found: {path}")
    ic = pd.read_csv(path, index_col=0)
    if n_actions is None:
        n_actions = len(ic)
        if n_actions == 0:
            raise ValueError(f"{path}: no items (the item context file has no rows)")
    need = ("item_id", "item_feature_0") + _ITEM_CAT_FEATURES
    missing = [c for c in need if c not in ic.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    ic = ic.sort_values("item_id").reset_index(drop=True)
    ids = ic["item_id"].to_numpy()
    if len(ids) != n_actions or not np.array_equal(ids, np.arange(n_actions)):
        raise ValueError(
            f"{path}: item_id must be exactly 0..{n_actions - 1} (one row per item), "
            f"got {len(ids)} rows with ids in [{ids.min() if len(ids) else None}, "
            f"{ids.max() if len(ids) else None}]"
        )
    num = pd.to_numeric(ic["item_feature_0"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(num).any():
        raise ValueError(f"{path}: item_feature_0 must be numeric without missing values")
    cat, cat_names, _ = _one_hot(ic, _ITEM_CAT_FEATURES, None, drop_first=False, order="appearance")
    action_context = np.concatenate([num[:, None], cat], axis=1)
    return ic, action_context, ["item_feature_0"] + cat_names


def load_obd(
    root: str | Path,
    behavior: str = "random",
    campaign: str = "all",
    *,
    drop_first: bool = False,
    user_categories: Mapping[str, Sequence[str]] | None = None,
) -> OBDLog:
    """Load and preprocess one OBD log.

    Args:
        root: folder holding ``<behavior>/<campaign>/``.
        behavior: ``"random"`` or ``"bts"``.
        campaign: ``"all"``, ``"men"`` or ``"women"``.
        drop_first: drop the first level of each one-hot user feature (obp's choice).
        user_categories: levels to use for each user feature (e.g. ``other.user_categories``
            from another log) so that two logs share one context layout; values not listed
            become all-zero. Default: the sorted levels seen in this log.
    """
    behavior = _check_choice("behavior", behavior, BEHAVIORS)
    campaign = _check_choice("campaign", campaign, CAMPAIGNS)
    root = _check_root(root)
    folder = root / behavior / campaign
    log_path = folder / f"{campaign}.csv"
    if not log_path.is_file():
        raise FileNotFoundError(
            f"OBD log not found for behavior={behavior!r}, campaign={campaign!r}: {log_path}"
        )
    len_list = OBD_LEN_LIST
    item_context, action_context, ac_names = _read_item_context(folder / "item_context.csv")
    n_actions = len(item_context)

    df = pd.read_csv(log_path, index_col=0)
    missing = [c for c in _REQUIRED_LOG_COLS + _USER_FEATURES if c not in df.columns]
    if missing:
        raise ValueError(f"{log_path}: missing columns {missing}")
    aff_cols = [f"{_AFFINITY_PREFIX}{i}" for i in range(n_actions)]
    missing_aff = [c for c in aff_cols if c not in df.columns]
    extra_aff = sorted((c for c in df.columns if str(c).startswith(_AFFINITY_PREFIX) and c not in set(aff_cols)),
                       key=str)
    if missing_aff or extra_aff:
        n_log = sum(str(c).startswith(_AFFINITY_PREFIX) for c in df.columns)
        raise ValueError(
            f"{log_path}: the item context file {folder / 'item_context.csv'} lists {n_actions} items (ids "
            f"0..{n_actions - 1}), so the log needs columns {aff_cols[0]}..{aff_cols[-1]}; it has {n_log} affinity "
            f"columns" + (f", missing {len(missing_aff)} (e.g. {missing_aff[:3]})" if missing_aff else "")
            + (f", unexpected {extra_aff[:3]}" if extra_aff else "")
        )
    df = df.reset_index(drop=True)
    n = len(df)

    def _int_col(name: str) -> np.ndarray:
        col = pd.to_numeric(df[name], errors="coerce")
        arr = col.to_numpy(dtype=np.float64)
        if np.isnan(arr).any() or (arr != np.round(arr)).any():
            raise ValueError(f"{log_path}: column {name!r} must hold integers without missing values")
        return arr.astype(np.int64)

    action = _int_col("item_id")
    if n and (action.min() < 0 or action.max() >= n_actions):
        bad = np.unique(action[(action < 0) | (action >= n_actions)])
        raise ValueError(f"{log_path}: item_id must lie in 0..{n_actions - 1}, found {bad[:10].tolist()}")

    raw_pos = _int_col("position")
    if n:
        if raw_pos.min() >= 1 and raw_pos.max() <= len_list:
            position = raw_pos - 1
        else:
            bad = np.unique(raw_pos[(raw_pos < 1) | (raw_pos > len_list)])
            raise ValueError(
                f"{log_path}: position must lie in 1..{len_list} (1-based, as in OBD), "
                f"found values {bad[:10].tolist()}"
            )
    else:
        position = raw_pos

    reward = pd.to_numeric(df["click"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(reward).any() or not np.isin(reward, (0.0, 1.0)).all():
        raise ValueError(f"{log_path}: click must be 0/1 without missing values")

    pscore = pd.to_numeric(df["propensity_score"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(pscore).any() or (pscore <= 0).any() or (pscore > 1).any():
        raise ValueError(f"{log_path}: propensity_score must lie in (0, 1] without missing values")

    timestamp = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    if timestamp.isna().any():
        raise ValueError(f"{log_path}: unparseable or missing timestamp values")
    timestamp = timestamp.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")

    if df[list(_USER_FEATURES)].isna().any().any():
        raise ValueError(f"{log_path}: missing values in user features")
    user_oh, user_names, used_levels = _one_hot(
        df, _USER_FEATURES, user_categories, drop_first=drop_first, order="sorted"
    )
    aff = df[aff_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(aff).any():
        raise ValueError(f"{log_path}: user-item affinity columns must be numeric without missing values")
    context = np.ascontiguousarray(np.concatenate([user_oh, aff], axis=1), dtype=np.float64)

    return OBDLog(
        n_rounds=n,
        n_actions=n_actions,
        len_list=len_list,
        context=context,
        context_names=user_names + aff_cols,
        action=action,
        position=position.astype(np.int64),
        reward=reward,
        pscore=pscore,
        timestamp=timestamp,
        action_context=action_context,
        action_context_names=ac_names,
        item_context=item_context,
        behavior=behavior,
        campaign=campaign,
        user_categories=used_levels,
    )


def _validate_alpha_beta(alpha: Any, beta: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        a = np.asarray(alpha, dtype=np.float64)
        b = np.asarray(beta, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: alpha and beta must be numeric lists ({e})") from None
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"{source}: alpha and beta must be 1-D lists")
    if a.shape != b.shape:
        raise ValueError(f"{source}: alpha and beta lengths differ ({a.size} vs {b.size})")
    if a.size == 0:
        raise ValueError(f"{source}: alpha and beta are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{source}: alpha and beta must be finite")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError(f"{source}: alpha and beta must be strictly positive")
    return a, b


def _read_prior_json(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"BTS prior file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "alpha" not in data or "beta" not in data:
        raise ValueError(f"{path}: expected a JSON object with keys 'alpha' and 'beta'")
    return _validate_alpha_beta(data["alpha"], data["beta"], str(path))


def load_bts_prior(root: str | Path, campaign: str = "all", n_actions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``root/bts/<campaign>/prior_bts.json`` -> (alpha, beta), float64 arrays.

    ``n_actions``: the campaign's item count (``OBDLog.n_actions``); a prior of another length is an error."""
    campaign = _check_choice("campaign", campaign, CAMPAIGNS)
    root = _check_root(root)
    path = root / "bts" / campaign / "prior_bts.json"
    alpha, beta = _read_prior_json(path)
    if n_actions is not None and alpha.size != n_actions:
        raise ValueError(f"{path}: the BTS prior has {alpha.size} items but the campaign's logs have {n_actions}")
    return alpha, beta


def bts_action_dist(
    prior_path_or_alpha_beta: str | Path | Mapping[str, Sequence[float]] | tuple,
    n_sim: int = 100_000,
    seed: int = 0,
    len_list: int = OBD_LEN_LIST,
    *,
    chunk_size: int = 20_000,
) -> np.ndarray:
    """Monte Carlo action distribution of the Bernoulli Thompson Sampling policy.

    Each simulation draws one ``Beta(alpha_i, beta_i)`` per item, ranks the items by the
    draw in descending order and puts the first ``len_list`` at positions ``0..len_list-1``
    (as obp's ``compute_bts_action_dist``). Returns counts / n_sim, shape
    ``[n_actions, len_list]``; each column sums to 1.

    ``prior_path_or_alpha_beta``: a path to ``prior_bts.json``, a mapping with ``alpha`` and
    ``beta``, or an ``(alpha, beta)`` pair. Result depends only on (prior, n_sim, seed,
    len_list, chunk_size).
    """
    if isinstance(prior_path_or_alpha_beta, (str, Path)):
        alpha, beta = _read_prior_json(Path(prior_path_or_alpha_beta))
    elif isinstance(prior_path_or_alpha_beta, Mapping):
        if "alpha" not in prior_path_or_alpha_beta or "beta" not in prior_path_or_alpha_beta:
            raise ValueError("prior mapping must have keys 'alpha' and 'beta'")
        alpha, beta = _validate_alpha_beta(
            prior_path_or_alpha_beta["alpha"], prior_path_or_alpha_beta["beta"], "prior"
        )
    elif isinstance(prior_path_or_alpha_beta, (tuple, list)) and len(prior_path_or_alpha_beta) == 2:
        alpha, beta = _validate_alpha_beta(*prior_path_or_alpha_beta, "prior")
    else:
        raise TypeError(
            "prior_path_or_alpha_beta must be a path, a mapping with 'alpha'/'beta', "
            "or an (alpha, beta) pair"
        )
    if isinstance(n_sim, bool) or not isinstance(n_sim, (int, np.integer)) or n_sim <= 0:
        raise ValueError(f"n_sim must be a positive integer, got {n_sim!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n_actions = alpha.size
    if isinstance(len_list, bool) or not isinstance(len_list, (int, np.integer)) or not 1 <= len_list <= n_actions:
        raise ValueError(f"len_list must be an integer in 1..{n_actions}, got {len_list!r}")
    n_sim, len_list = int(n_sim), int(len_list)

    rng = np.random.default_rng(seed)
    counts = np.zeros(n_actions * len_list, dtype=np.int64)
    pos_offsets = np.arange(len_list, dtype=np.int64)
    done = 0
    while done < n_sim:
        m = min(chunk_size, n_sim - done)
        draws = rng.beta(alpha, beta, size=(m, n_actions))
        if len_list < n_actions:
            top = np.argpartition(-draws, len_list - 1, axis=1)[:, :len_list]
        else:
            top = np.broadcast_to(np.arange(n_actions), (m, n_actions))
        top_vals = np.take_along_axis(draws, top, axis=1)
        order = np.argsort(-top_vals, axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, axis=1)  # [m, len_list] item at each position
        counts += np.bincount((ranked * len_list + pos_offsets).ravel(), minlength=counts.size)
        done += m
    return counts.reshape(n_actions, len_list).astype(np.float64) / n_sim


def obd_target_probs(dist: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Per-row target probabilities: row i = ``dist[:, position[i]]``. Shape [n, n_actions]."""
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be 2-D [n_actions, len_list], got shape {dist.shape}")
    pos = np.asarray(position)
    if pos.ndim != 1:
        raise ValueError(f"position must be 1-D, got shape {pos.shape}")
    if pos.size and not np.issubdtype(pos.dtype, np.integer):
        if not np.all(pos == np.round(pos)):
            raise ValueError("position must hold integers")
    pos = pos.astype(np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= dist.shape[1]):
        raise ValueError(
            f"position values must lie in 0..{dist.shape[1] - 1} (0-based), "
            f"got range [{pos.min()}, {pos.max()}]"
        )
    return np.ascontiguousarray(dist.T[pos])
