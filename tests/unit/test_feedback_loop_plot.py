"""`make report LOOP=1`'s plot of the feedback loop, from a loop record (real matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.feedback_loop import LoopRun, PhaseResult, Sample
from tools.report import render_feedback_loop

pytestmark = pytest.mark.timeout(60)


def _run() -> LoopRun:
    run = LoopRun()
    run.samples = [Sample(0.0, 0, "m:1", {}, None)]
    run.samples += [Sample(float(n), n, "m:1", {"m:1": 0.96}, 0.1) for n in (50, 100, 150)]
    run.samples += [Sample(float(n), n, "m:1", {"m:1": 0.65}, 1.5) for n in (200, 250, 300)]
    run.samples += [Sample(400.0, 450, "m:2", {"m:1": 0.65, "m:2": 0.97}, 0.7)]
    run.phases = [
        PhaseResult("baseline", 0.6, started_at=1.0, flowers_before=0, flowers=150),
        PhaseResult("shift", 0.4, started_at=2.0, flowers_before=150, flowers=150),
        PhaseResult("retrain", 41.9, started_at=3.0, flowers_before=300),
        PhaseResult("recovered", 0.7, started_at=4.0, flowers_before=300, flowers=150),
    ]
    return run


def test_the_loop_plot_is_written(tmp_path: Path) -> None:
    path = render_feedback_loop(_run(), tmp_path)
    assert path == tmp_path / "feedback-loop.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_the_loop_record_has_every_phase_and_sample_but_no_command_output() -> None:
    run = _run()
    run.phases[2].output = "long make output"
    record = json.loads(json.dumps(run.record()))
    assert list(record["phases"]) == ["baseline", "shift", "retrain", "recovered"]
    assert "output" not in record["phases"]["retrain"]
    assert record["phases"]["retrain"]["seconds"] == 41.9
    assert [s["flowers_sent"] for s in record["samples"]] == [0, 50, 100, 150, 200, 250, 300, 450]
