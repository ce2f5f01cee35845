"""The contributions of a few flowers, as `make report` draws them (reports/explanations.png).

Each flower is sent to POST /explain of a running service; one panel per flower shows, for
its predicted class, the base value (the mean probability over the model's background), each
feature's Shapley contribution as a step up or down, and the probability they add up to: a
waterfall read left to right. `python -m tools.explanation_plot --service-url URL` draws it
for a service of your own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import requests

from iris_pipeline.paths import REPORTS_DIR
from iris_service.http.schemas import SETOSA_EXAMPLE, VERSICOLOR_EXAMPLE, VIRGINICA_EXAMPLE
from iris_service.names import FEATURE_NAMES

# A flower of each class and one between versicolor and virginica.
FLOWERS: tuple[dict[str, float], ...] = (
    SETOSA_EXAMPLE,
    VERSICOLOR_EXAMPLE,
    VIRGINICA_EXAMPLE,
    {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.0, "petal_width": 1.6},
)
FILE_NAME = "explanations.png"


def explanations_of(
    service_url: str, flowers: tuple[dict[str, float], ...] = FLOWERS, headers: Any = None
) -> list[dict[str, Any]] | None:
    """The /explain answers for `flowers`; None when the model cannot explain (409)."""
    answers = []
    for flower in flowers:
        response = requests.post(f"{service_url}/explain", json=flower, headers=headers, timeout=30)
        if response.status_code == 409:
            print(f"no explanations: {response.json()['detail']}", file=sys.stderr)
            return None
        response.raise_for_status()
        answers.append({"flower": flower, **response.json()})
    return answers


def draw(answers: list[dict[str, Any]], path: Path) -> Path:
    """One waterfall panel per answer (its predicted class), saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes_row = plt.subplots(
        1, len(answers), figsize=(3.6 * len(answers), 3.8), sharey=True, squeeze=False
    )
    for axes, answer in zip(axes_row[0], answers, strict=True):
        name = answer["class_name"]
        level = answer["base_value"][name]
        labels, bottoms, heights = ["base"], [0.0], [level]
        for feature in FEATURE_NAMES:
            step = answer["contributions"][name][feature]
            labels.append(feature.replace("_", "\n"))
            bottoms.append(level if step >= 0 else level + step)
            heights.append(abs(step))
            level += step
        labels.append(f"p({name})")
        bottoms.append(0.0)
        heights.append(answer["probabilities"][name])
        colours = (
            ["#999999"]
            + [
                "#2a9d8f" if answer["contributions"][name][f] >= 0 else "#e76f51"
                for f in FEATURE_NAMES
            ]
            + ["#264653"]
        )
        axes.bar(range(len(labels)), heights, bottom=bottoms, color=colours)
        axes.set_xticks(range(len(labels)), labels, fontsize=7)
        measurements = ", ".join(f"{answer['flower'][f]:g}" for f in FEATURE_NAMES)
        axes.set_title(f"{name} ({measurements})", fontsize=9)
        axes.set_ylim(0, 1.05)
        axes.axhline(answer["base_value"][name], color="#999999", linewidth=0.6, linestyle=":")
    axes_row[0][0].set_ylabel("probability of the predicted class")
    version = answers[0]["model_tag"]
    figure.suptitle(
        f"Exact Shapley contributions, {version}, background of "
        f"{answers[0]['background']['rows']} training flowers",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def render_from_service(service_url: str, out_dir: Path, headers: Any = None) -> Path | None:
    """reports/explanations.png for the service at `service_url` (None: it cannot explain)."""
    answers = explanations_of(service_url, headers=headers)
    return draw(answers, out_dir / FILE_NAME) if answers else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-url", required=True)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / FILE_NAME)
    args = parser.parse_args(argv)
    answers = explanations_of(args.service_url)
    if not answers:
        return 1
    print(draw(answers, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
