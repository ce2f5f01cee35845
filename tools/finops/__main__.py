"""Command line: `python -m tools.finops --help`."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

from tools.finops import capacity as cap
from tools.finops.catalogue import load_catalogue
from tools.finops.errors import FinOpsError
from tools.finops.report import (
    Inputs,
    money,
    per_million,
    terminal_table,
    write_all,
)
from tools.finops.simulation import Policy, compare
from tools.finops.traffic import Traffic, constant, diurnal, from_csv, spiky

DEFAULT_PEAK_RPS = 1500.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m tools.finops",
        description=(
            "Simulate a month of traffic minute by minute: the replicas an autoscaler would run, "
            "the minutes short of capacity, and the cost on each instance type, on-demand or spot, "
            "fixed or autoscaled, and serverless. Writes finops.md, finops.json and PNG plots."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument("--profile", choices=("constant", "diurnal", "spiky"), default="diurnal")
    traffic.add_argument(
        "--traffic-csv",
        type=Path,
        metavar="PATH",
        help="requests per minute, one row per minute (column 'requests' or the "
        "last one; header optional); overrides --profile",
    )
    traffic.add_argument(
        "--peak-rps",
        type=_positive,
        default=None,
        help=f"peak requests/s (default {DEFAULT_PEAK_RPS:g}; with a CSV, rescale it to this peak)",
    )
    traffic.add_argument(
        "--trough-ratio",
        type=_fraction,
        default=0.2,
        help="diurnal/spiky: night load as a share of the peak",
    )
    traffic.add_argument(
        "--peak-hour", type=float, default=14.0, help="hour of the daily peak (UTC)"
    )
    traffic.add_argument(
        "--base-ratio",
        type=_fraction,
        default=0.3,
        help="spiky: the diurnal base's peak as a share of the burst peak",
    )
    traffic.add_argument(
        "--bursts-per-day", type=float, default=4.0, help="spiky: mean bursts per day"
    )
    traffic.add_argument("--burst-minutes", type=int, default=10, help="spiky: longest burst")
    traffic.add_argument("--seed", type=int, default=0, help="spiky: random seed")

    capacity = parser.add_argument_group(
        "capacity (from the benchmark unless any of --capacity-rps, --replica-vcpu, "
        "--replica-memory-mb, --cold-start-s, --latency-ms is given)"
    )
    capacity.add_argument(
        "--bench",
        type=Path,
        default=cap.DEFAULT_BENCH,
        metavar="PATH",
        help="benchmark output; defaults are used when it is missing",
    )
    capacity.add_argument("--no-bench", action="store_true", help="ignore the benchmark output")
    capacity.add_argument(
        "--run",
        metavar="NAME",
        help="benchmark run for the detailed tables (default: the cheapest)",
    )
    capacity.add_argument(
        "--capacity-rps",
        type=_positive,
        help=f"requests/s one replica sustains within the SLO ({cap.DEFAULT_RPS:g})",
    )
    capacity.add_argument(
        "--replica-vcpu",
        type=_positive,
        help=f"vCPU per replica ({cap.DEFAULT_VCPU:g})",
    )
    capacity.add_argument(
        "--replica-memory-mb",
        type=_positive,
        help=f"memory per replica in MB ({cap.DEFAULT_MEMORY_MB:g})",
    )
    capacity.add_argument(
        "--cold-start-s",
        type=_positive,
        help=f"seconds until a new replica serves ({cap.DEFAULT_COLD_START_S:g})",
    )
    capacity.add_argument(
        "--latency-ms",
        type=_positive,
        help=f"typical request latency, the serverless duration ({cap.DEFAULT_LATENCY_MS:g})",
    )

    policy = parser.add_argument_group("SLO and policy")
    policy.add_argument("--slo-p99-ms", type=_positive, default=100.0, help="latency SLO (p99)")
    policy.add_argument(
        "--max-risk",
        type=_fraction,
        default=0.001,
        help="SLO met when at most this share of requests is at risk",
    )
    policy.add_argument(
        "--target-utilization",
        type=_fraction,
        default=0.7,
        help="autoscaler target: replicas planned at this share of capacity",
    )
    policy.add_argument(
        "--headroom",
        type=float,
        default=0.1,
        help="extra share of traffic to plan for on top of the observed load",
    )
    policy.add_argument("--min-replicas", type=_count, default=2)
    policy.add_argument("--max-replicas", type=_count, default=100)
    policy.add_argument(
        "--scale-up-delay-min",
        type=_count,
        default=None,
        help="minutes until a new replica serves (default: cold start rounded up, >= 1)",
    )
    policy.add_argument(
        "--scale-down-window-min",
        type=_count,
        default=5,
        help="scale-down stabilisation window (0: immediate)",
    )
    policy.add_argument(
        "--spot-share",
        type=_fraction,
        default=0.5,
        help="share of instance-hours on spot in the 'spot' options (0: on-demand only)",
    )
    policy.add_argument(
        "--reserved-memory-gib",
        type=float,
        default=0.5,
        help="memory per instance kept for the system",
    )

    out = parser.add_argument_group("inputs and outputs")
    out.add_argument(
        "--prices",
        type=Path,
        metavar="PATH",
        help="price catalogue YAML (default: the shipped tools/finops/prices.yaml)",
    )
    out.add_argument(
        "--out-dir",
        type=Path,
        default=Path("reports"),
        help="where reports are written",
    )
    out.add_argument("--quiet", action="store_true", help="no terminal table")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots (faster)")
    return parser


def _traffic(args: argparse.Namespace) -> Traffic:
    if args.traffic_csv is not None:
        return from_csv(args.traffic_csv, args.peak_rps)
    peak = args.peak_rps if args.peak_rps is not None else DEFAULT_PEAK_RPS
    if args.profile == "constant":
        return constant(peak)
    if args.profile == "diurnal":
        return diurnal(peak, args.trough_ratio, args.peak_hour)
    return spiky(
        peak,
        args.base_ratio,
        args.trough_ratio,
        args.bursts_per_day,
        args.burst_minutes,
        args.peak_hour,
        args.seed,
    )


def _capacity(args: argparse.Namespace) -> cap.CapacityInput:
    flags = (
        args.capacity_rps,
        args.replica_vcpu,
        args.replica_memory_mb,
        args.cold_start_s,
        args.latency_ms,
    )
    if any(f is not None for f in flags):
        return cap.from_flags(*flags)
    if args.no_bench:
        return cap.defaults("--no-bench given")
    return cap.load_bench(args.bench, args.slo_p99_ms)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    policy = Policy(
        slo_p99_ms=args.slo_p99_ms,
        target_utilization=args.target_utilization,
        headroom=args.headroom,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        scale_up_delay_min=args.scale_up_delay_min,
        scale_down_window_min=args.scale_down_window_min,
        spot_share=args.spot_share,
        max_risk_fraction=args.max_risk,
        reserved_memory_gib=args.reserved_memory_gib,
    )
    catalogue = load_catalogue(args.prices)
    traffic = _traffic(args)
    capacity = _capacity(args)
    result = compare(traffic, capacity.configs, catalogue, policy, args.run)
    command = "python -m tools.finops " + shlex.join(sys.argv[1:] if argv is None else argv)
    inputs = Inputs(
        traffic=traffic,
        capacity=capacity,
        catalogue=catalogue,
        policy=policy,
        command=command.strip(),
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    paths = write_all(inputs, result, args.out_dir, plots=not args.no_plots)
    if not args.quiet:
        print(terminal_table(result))
        print()
        best = result.recommended
        if best is None:
            print("No option meets the SLO; see the report.")
        else:
            print(
                f"Cheapest meeting the SLO: {best.label}: {money(best.monthly_cost)}/month, "
                f"{per_million(best.cost_per_million)} per million predictions"
            )
        for note in capacity.notes:
            print(f"Note: {note}")
        written = ", ".join(str(p) for p in paths.values())
        print(f"Wrote {written} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except FinOpsError as exc:
        print(f"finops: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
