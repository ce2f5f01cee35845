"""Benchmark of the shipped BentoML service against plain FastAPI and `mlflow models serve`.

Modules: models (train the benchmark's own models), servers (start/stop each server, cold
start), payloads (request bodies), load (wrk with a Lua POST script), resources (CPU and
memory of a server's process tree), report (bench.json, bench.md, plots), baseline_app (the
plain FastAPI + uvicorn app). Entry point: `python -m tools.bench --help`.
"""
