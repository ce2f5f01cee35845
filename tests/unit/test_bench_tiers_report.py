"""The report of `make bench-tiers`: every shape's row, the extra hop and the spread."""

from __future__ import annotations

from tools.bench.tiers import markdown


def _shape(rps: float, p50_one: float) -> dict:
    loaded = {"requests_per_s": rps, "flowers_per_s": rps * 1000, "p50_ms": 40.0}
    loaded |= {"p99_ms": 120.0, "errors": 0}
    one = {"requests_per_s": 100.0, "flowers_per_s": 100000, "p50_ms": p50_one}
    one |= {"p99_ms": 20.0, "errors": 0}
    return {"loaded": loaded, "one_connection": one}


def test_the_report_has_every_shape_the_hop_and_the_spread() -> None:
    results = {
        "model": "iris-rf:abc",
        "batch_flowers": 1000,
        "connections": 8,
        "shapes": {
            "single": _shape(160.0, 9.0),
            "tiers, 1 runner replica": _shape(116.0, 12.2),
            "tiers, 2 runner replicas": _shape(120.0, 10.3),
        },
        "extra_hop_p50_ms": 3.2,
        "spread": {
            "bounded connection life": {
                "restarted_replica_share": 0.51,
                "calls_after_restart": [899.0, 865.0],
                "errors": 0,
            }
        },
    }
    text = markdown(results)
    assert "| single | 160.0 | 160000.0 |" in text
    assert "| tiers, 2 runner replicas | 120.0 |" in text
    assert "tiers - single): 3.2 ms" in text
    assert "took 51% of the runner calls" in text
