"""The closed loop and the pilot: plan a cohort pilot, analyze it, serve, learn, gate, promote, roll back.

Modules (each with one job): :mod:`~grpokit.loop.pilot_design` (randomize whole cohorts, stratified
or matched in pairs on their pre-period outcome), :mod:`~grpokit.loop.pilot_analysis` (the
covariate-adjusted effect over cohorts with its randomization-inference and t intervals, Welch and
the unit-level cluster-robust difference beside it), :mod:`~grpokit.loop.pilot_power` (minimal
detectable effect, cohorts or decisions needed), :mod:`~grpokit.loop.pilot_sim` (pilots simulated
on a scenario's ground truth), :mod:`~grpokit.loop.pilot` (the workflow over a decision log) and
:mod:`~grpokit.loop.loop` (the closed loop against a running decision service).
"""
