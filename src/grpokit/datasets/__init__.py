"""Real logged-bandit datasets."""

from grpokit.datasets.obd import (
    BEHAVIORS,
    CAMPAIGNS,
    OBD_LEN_LIST,
    OBD_N_ACTIONS,
    OBDLog,
    bts_action_dist,
    load_bts_prior,
    load_obd,
    obd_target_probs,
)

__all__ = [
    "BEHAVIORS",
    "CAMPAIGNS",
    "OBD_LEN_LIST",
    "OBD_N_ACTIONS",
    "OBDLog",
    "bts_action_dist",
    "load_bts_prior",
    "load_obd",
    "obd_target_probs",
]
