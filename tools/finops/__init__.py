"""FinOps cost simulation: measured capacity -> replicas, monthly cost and SLO risk.

Run `python -m tools.finops --help` (or `make finops`). Modules, one concern each:
catalogue (prices), traffic (load profiles), capacity (benchmark or flags), simulation
(autoscaler and cost), report (Markdown, JSON, plots, terminal table).
"""
