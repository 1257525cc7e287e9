"""Cohort pilots that can decide: randomize whole cohorts, estimate the effect, size the pilot.

One room for the pilot's math, below the workflows that use it (``grpokit run``'s pilot in
:mod:`grpokit.business`, the closed loop and ``grpokit pilot plan|analyze`` in :mod:`grpokit.loop`):

* :mod:`~grpokit.pilot.design`: cohorts stratified or matched in pairs on their pre-period mean,
  half of each stratum treated; the design's assignments (the randomization distribution);
* :mod:`~grpokit.pilot.analysis`: the effect over cohorts adjusted on the pre-period mean (ANCOVA /
  CUPED) with its randomization-inference interval, the OLS t interval, Welch and the unit-level
  cluster-robust difference beside it;
* :mod:`~grpokit.pilot.power`: minimal detectable effect, cohorts or decisions needed;
* :mod:`~grpokit.pilot.simulate`: pilots simulated on a scenario's ground truth (the new design and
  the older coin-per-cohort Welch design).

It imports numpy, scipy and torch only (a scenario is used through its ``reward``,
``expected_reward``, ``group_names`` interface), never the workflows above it.
"""
