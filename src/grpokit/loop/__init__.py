"""The closed loop and the pilot: plan a cohort pilot, analyze it, serve, learn, gate, promote, roll back.

The pilot's math (design, analysis, power, simulation on a scenario) lives in :mod:`grpokit.pilot`,
below this room; ``grpokit.loop.pilot_design``, ``pilot_analysis``, ``pilot_power`` and ``pilot_sim``
re-export it unchanged. Here: :mod:`~grpokit.loop.pilot` (the pilot workflow over a served decision
log and the store's ``pilots`` table) and :mod:`~grpokit.loop.loop` (the closed loop against a
running decision service).
"""
