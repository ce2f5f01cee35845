"""python -m tools.bench.explain_cost [--families ...] [--repeats 200] [--out-dir reports]

The cost of one explanation against one prediction, per model family: each family is
trained as the pipeline trains it (iris_pipeline/training.py, seeded), compiled to ONNX and
run with ONNX Runtime on one thread, as a serving worker runs it; its background is the
pipeline's sample of 50 training rows. Timed in this process, without HTTP: the median and
p90 of `--repeats` calls of predict_proba for one flower, of the exact Shapley explanation of
one flower (16 coalitions * 50 background rows = 800 model rows, plus the flower itself) and
of the largest V2 explain request (IRIS_MAX_EXPLAIN_FLOWERS flowers, fewer repeats).
Writes explain-cost.json and explain-cost.md into --out-dir; `make bench` runs it too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iris_pipeline import compiling, training
from iris_pipeline.explanation_background import background_sample
from iris_pipeline.paths import REPORTS_DIR
from iris_service.inference import explanations
from iris_service.settings import settings

SEED = 0


def _timings_ms(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
    }


def measure_family(family: str, data: training.Dataset, repeats: int) -> dict[str, Any]:
    """Timings of one prediction, one explanation and a full V2 explain batch of `family`."""
    model = training.build_candidate(family, SEED).fit(data.x_train.to_numpy(), data.y_train)
    compilation = compiling.compile_model(model, compiling.equivalence_rows(data))
    if compilation.compiled is None:
        raise RuntimeError(f"{family} did not compile: {compilation.equivalence.reason}")
    predictor = compiling.OnnxPredictor(compilation.compiled)

    def predict(rows: np.ndarray) -> np.ndarray:
        return predictor.predict_proba(rows).astype(np.float64)

    background = background_sample(data.x_train)
    flowers = data.x_test.to_numpy(dtype=np.float64)
    one = flowers[:1]
    batch = np.resize(flowers, (settings.max_explain_flowers, flowers.shape[1]))
    prediction = _timings_ms(lambda: predict(one), repeats)
    explanation = _timings_ms(lambda: explanations.explain(predict, one, background), repeats)
    largest = _timings_ms(
        lambda: explanations.explain(predict, batch, background), max(3, repeats // 20)
    )
    return {
        "family": family,
        "background_rows": len(background),
        "prediction": prediction,
        "explanation": explanation,
        "explanation_over_prediction": explanation["median_ms"] / prediction["median_ms"],
        f"explanation_of_{settings.max_explain_flowers}": largest,
    }


def measure(families: list[str], repeats: int) -> dict[str, Any]:
    data = training.load_dataset(seed=SEED)
    return {
        "repeats": repeats,
        "families": [measure_family(family, data, repeats) for family in families],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# One explanation against one prediction",
        "",
        f"In-process, ONNX Runtime on one thread, median (p90) of {result['repeats']} calls; "
        "background of 50 training rows.",
        "",
        f"| family | prediction ms | explanation ms | ratio | {settings.max_explain_flowers} "
        "flowers explained ms |",
        "|---|---|---|---|---|",
    ]
    for row in result["families"]:
        p, e = row["prediction"], row["explanation"]
        large = row[f"explanation_of_{settings.max_explain_flowers}"]
        lines.append(
            f"| {row['family']} | {p['median_ms']:.3f} ({p['p90_ms']:.3f}) | "
            f"{e['median_ms']:.3f} ({e['p90_ms']:.3f}) | "
            f"{row['explanation_over_prediction']:.0f}x | {large['median_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "explain-cost.json", out_dir / "explain-cost.md"
    json_path.write_text(json.dumps(result, indent=2))
    md_path.write_text(markdown(result))
    return [json_path, md_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.explain_cost", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=list(training.CANDIDATES),
        default=list(training.CANDIDATES),
    )
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measure")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    result = measure(args.families, args.repeats)
    paths = write(result, args.out_dir)
    print(markdown(result))
    print(f"Wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
