"""Outputs: Markdown report, JSON, PNG plots and the terminal summary table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.finops.capacity import CapacityInput
from tools.finops.catalogue import Catalogue
from tools.finops.simulation import Comparison, Option, Policy
from tools.finops.traffic import MINUTES_PER_DAY, Traffic

DAY_PLOT = "finops_day.png"
COST_PLOT = "finops_costs.png"


@dataclass
class Inputs:
    traffic: Traffic
    capacity: CapacityInput
    catalogue: Catalogue
    policy: Policy
    command: str
    generated_at: str


def money(value: float) -> str:
    return f"${value:,.2f}" if math.isfinite(value) else "n/a"


def per_million(value: float) -> str:
    return f"${value:,.4f}" if math.isfinite(value) else "n/a"


def percent(fraction: float) -> str:
    """A share as a percentage with two significant digits when it is small, so that a
    non-zero share never prints as 0.0000%."""
    if 0 < fraction < 0.0001:
        digits = 1 - math.floor(math.log10(fraction * 100))
        return f"{fraction * 100:.{digits}f}%"
    return f"{fraction:.2%}"


def key_options(result: Comparison) -> list[Option]:
    """The options worth a row in the summary: the answer and one of each kind of choice."""
    primary = result.primary.name
    picks = [result.recommended]
    for strategy in ("autoscale", "fixed"):
        for purchase in sorted({o.purchase for o in result.options if o.strategy == strategy}):
            picks.append(result.best(config=primary, strategy=strategy, purchase=purchase))
    for platform in sorted({o.platform for o in result.options if o.strategy == "serverless"}):
        picks.append(result.best(config=primary, platform=platform))
    for config in dict.fromkeys(o.config for o in result.options):
        if config != primary:
            picks.append(result.best(config=config))
    unique: dict[str, Option] = {}
    for option in picks:
        if option is not None:
            unique.setdefault(option.label, option)
    return list(unique.values())


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [_row(header), _row(["---"] * len(header))]
    return lines + [_row(r) for r in rows] + [""]


def _instances(option: Option) -> str:
    if option.avg_instances is None:
        return "-"
    return f"{option.avg_instances:.2f} / {option.peak_instances}"


def key_table(result: Comparison) -> tuple[list[str], list[list[Any]]]:
    recommended = result.recommended
    header = [
        "Configuration",
        "Strategy",
        "Platform",
        "Purchase",
        "Monthly cost",
        "$ / 1M predictions",
        "Instances avg / peak",
        "Minutes short of capacity",
        "Requests at risk (share of the month's)",
        "SLO (on requests at risk)",
    ]
    rows = []
    for option in key_options(result):
        mark = " ⭐" if option is recommended else ""
        rows.append(
            [
                option.config + mark,
                option.strategy,
                option.platform,
                option.purchase,
                money(option.monthly_cost),
                per_million(option.cost_per_million),
                _instances(option),
                f"{option.shortfall_minutes:,} min",
                f"{option.requests_at_risk:,.0f} requests ({percent(option.risk_fraction)})",
                "met" if option.meets_slo else "MISSED",
            ]
        )
    return header, rows


def markdown(inputs: Inputs, result: Comparison) -> str:
    traffic, capacity, policy = inputs.traffic, inputs.capacity, inputs.policy
    recommended = result.recommended
    primary = result.primary
    lines = [
        "# Serving cost simulation (FinOps)",
        "",
        (
            f"Generated {inputs.generated_at} by `{inputs.command}`. One month = 30 days = "
            f"{len(traffic.rps):,} simulated minutes. Prices in {inputs.catalogue.currency}."
        ),
        "",
        "## Answer",
        "",
    ]
    if recommended is not None:
        lines += [
            (
                f"- **Cheapest configuration meeting the SLO**: `{recommended.label}` — "
                f"**{money(recommended.monthly_cost)} per month**, "
                f"**{per_million(recommended.cost_per_million)} per million predictions**, "
                f"{recommended.shortfall_minutes} shortfall minutes, "
                f"{percent(recommended.risk_fraction)} of requests at risk "
                f"(SLO: p99 <= {policy.slo_p99_ms:g} ms with at most "
                f"{percent(policy.max_risk_fraction)} of requests at risk)."
            ),
        ]
        safe = result.recommended_on_demand
        if safe is not None and safe is not recommended:
            lines.append(
                f"- Cheapest without spot capacity: `{safe.label}` — "
                f"{money(safe.monthly_cost)} per month, "
                f"{per_million(safe.cost_per_million)} per million predictions."
            )
    else:
        lines += ["- **No option meets the SLO** with this traffic and policy; see the tables."]
    lines += [
        (
            f"- Traffic: {traffic.description}; mean {traffic.mean_rps:,.1f} req/s, "
            f"{traffic.total_requests / 1e6:,.1f} million predictions per month."
        ),
        f"- Capacity: {_capacity_sentence(capacity)}",
        (
            f"- Detailed tables use the serving configuration `{primary.name}` "
            f"({primary.rps:g} req/s per replica, {primary.vcpu:g} vCPU, "
            f"{primary.memory_mb:g} MB, scale-up delay {policy.delay_for(primary)} min)."
        ),
        "",
        "## Key options",
        "",
    ]
    header, rows = key_table(result)
    lines += _table(header, rows)
    lines += [
        "A minute short of capacity puts only that minute's excess requests at risk, so an "
        "option can be short for many minutes and still meet the SLO, which counts requests.",
        "",
    ]
    lines += [f"![Traffic vs capacity over the busiest day]({DAY_PLOT})", ""]
    lines += _fixed_vs_autoscale(result)
    lines += _instance_section(inputs, result)
    lines += _serverless_section(result)
    lines += _configs_section(inputs, result)
    lines += [f"![Monthly cost per option]({COST_PLOT})", ""]
    lines += ["## Assumptions", ""] + [f"- {a}" for a in assumptions(inputs, result)] + [""]
    return "\n".join(lines)


def _capacity_sentence(capacity: CapacityInput) -> str:
    if capacity.source == "bench":
        when = capacity.generated_at or "unknown date"
        machine = f" on {capacity.machine}" if capacity.machine else ""
        names = ", ".join(c.label for c in capacity.configs)
        where = f"{capacity.bench_path}, generated {when}{machine}"
        return f"measured by the benchmark ({where}): {names}."
    return "; ".join(capacity.notes) + "."


def _fixed_vs_autoscale(result: Comparison) -> list[str]:
    primary = result.primary.name
    rows = []
    platforms = dict.fromkeys(o.platform for o in result.options if o.strategy == "autoscale")
    for platform in platforms:
        pair = {
            s: result.best(config=primary, platform=platform, strategy=s, purchase="on-demand")
            for s in ("fixed", "autoscale")
        }
        fixed, auto = pair["fixed"], pair["autoscale"]
        if fixed is None or auto is None:
            continue
        saving = 1 - auto.monthly_cost / fixed.monthly_cost if fixed.monthly_cost else 0.0
        rows.append(
            [
                platform,
                fixed.peak_instances,
                money(fixed.monthly_cost),
                money(auto.monthly_cost),
                f"{saving:.0%}",
                auto.shortfall_minutes,
                "met" if auto.meets_slo else "MISSED",
            ]
        )
    header = [
        "Instance type",
        "Fixed instances",
        "Fixed (peak) / month",
        "Autoscaled / month",
        "Saving",
        "Autoscaled shortfall min",
        "Autoscaled SLO",
    ]
    intro = f"Configuration `{primary}`, on-demand prices."
    return [
        "## Fixed provisioning for the peak vs autoscaling",
        "",
        intro,
        "",
        *_table(header, rows),
    ]


def _instance_section(inputs: Inputs, result: Comparison) -> list[str]:
    primary = result.primary.name
    purchases = sorted({o.purchase for o in result.options if o.strategy == "autoscale"})
    rows = []
    for instance in inputs.catalogue.instances:
        found = {
            p: result.best(config=primary, platform=instance.name, strategy="autoscale", purchase=p)
            for p in purchases
        }
        first = next((o for o in found.values() if o is not None), None)
        if first is None:
            continue
        rows.append(
            [
                instance.name,
                f"{instance.region}",
                f"{instance.vcpu:g} / {instance.memory_gib:g}",
                first.replicas_per_instance,
                _instances(first),
                *(money(found[p].monthly_cost) if found[p] else "-" for p in purchases),
                per_million(found["on-demand"].cost_per_million) if found.get("on-demand") else "-",
                instance.date,
            ]
        )
    header = [
        "Instance type",
        "Region",
        "vCPU / GiB",
        "Replicas per instance",
        "Instances avg / peak",
    ]
    header += [f"{p} / month" for p in purchases] + ["$ / 1M (on-demand)", "Price date"]
    unfit = [p for c, p in result.unfit if c == primary]
    lines = ["## Instance types and on-demand vs spot (autoscaled)", ""]
    lines += [f"Configuration `{primary}`.", "", *_table(header, rows)]
    if unfit:
        lines += [f"A replica does not fit on: {', '.join(unfit)}.", ""]
    return lines


def _serverless_section(result: Comparison) -> list[str]:
    rows = []
    for option in result.options:
        if option.strategy == "serverless" and option.config == result.primary.name:
            rows.append(
                [
                    option.platform,
                    "; ".join(option.notes),
                    money(option.monthly_cost),
                    per_million(option.cost_per_million),
                    f"{option.requests_at_risk:,.0f}",
                    "met" if option.meets_slo else "MISSED",
                ]
            )
    if not rows:
        return []
    header = [
        "Option",
        "Sizing",
        "Monthly cost",
        "$ / 1M",
        "Cold-start requests at risk",
        "SLO",
    ]
    return ["## Serverless", "", *_table(header, rows)]


def _configs_section(inputs: Inputs, result: Comparison) -> list[str]:
    capacity = inputs.capacity
    reference = result.best(config=result.primary.name)
    rows = []
    for config in capacity.configs:
        best = result.best(config=config.name)
        delta = "-"
        if best is not None and reference is not None and config.name != result.primary.name:
            delta = f"{best.monthly_cost - reference.monthly_cost:+,.2f}"
        rows.append(
            [
                config.label,
                f"{config.rps:,.0f}",
                "-" if config.p99_ms is None else f"{config.p99_ms:g}",
                f"{config.vcpu:g}",
                f"{config.memory_mb:g}",
                f"{config.cold_start_s:g}",
                f"{best.strategy} {best.platform} {best.purchase}" if best else "-",
                money(best.monthly_cost) if best else "-",
                per_million(best.cost_per_million) if best else "-",
                delta,
                ", ".join(config.estimated) or "-",
            ]
        )
    header = [
        "Configuration",
        "req/s per replica",
        "p99 ms",
        "vCPU",
        "Memory MB",
        "Cold start s",
        "Cheapest option",
        "Monthly cost",
        "$ / 1M",
        f"vs {result.primary.name} ($/month)",
        "Defaulted fields",
    ]
    lines = ["## Serving configurations", ""]
    lines += [f"Capacity source: {_capacity_sentence(capacity)}", "", *_table(header, rows)]
    if capacity.excluded:
        lines += ["Runs not counted:", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in capacity.excluded] + [""]
    return lines


def assumptions(inputs: Inputs, result: Comparison) -> list[str]:
    policy = inputs.policy
    delays = ", ".join(f"{c.name} {policy.delay_for(c)} min" for c in inputs.capacity.configs)
    delay_origin = "set by flag" if policy.scale_up_delay_min is not None else "cold start"
    providers = ", ".join(inputs.catalogue.providers)
    items = [
        (
            "Autoscaler: desired replicas = ceil(load x (1 + headroom "
            f"{policy.headroom:g}) / (capacity x target utilization "
            f"{policy.target_utilization:g})), between {policy.min_replicas} and "
            f"{policy.max_replicas} replicas; fixed provisioning applies the same rule to the "
            "busiest minute of the month."
        ),
        (
            f"Scale-up delay (new replicas serve after it): {delays} ({delay_origin}; "
            "by default the cold start rounded up to whole minutes, at least 1)."
        ),
        (
            f"Scale-down stabilisation window: {policy.scale_down_window_min} min (the largest "
            "desired count of that window is kept); replicas still starting are billed but do "
            "not serve."
        ),
        (
            "Shortfall minute: load > running replicas x capacity; the excess requests are "
            "'at risk' of breaching the latency SLO. The month starts with the first minute's "
            "replicas ready."
        ),
        f"SLO met: at most {percent(policy.max_risk_fraction)} of the month's requests at risk.",
        (
            "Replicas per instance: limited by vCPU (replica vCPU = measured CPU ms per request "
            "x req/s, rounded up to 0.25; one vCPU per worker when not measured) and memory "
            f"(instance memory minus {policy.reserved_memory_gib:g} GiB for the system); "
            "instances = ceil(replicas / replicas per instance), billed per minute."
        ),
        (
            f"Spot mix: {policy.spot_share:.0%} of instance-hours at the catalogue's spot "
            "price; interruptions and spot price changes are not modelled."
        ),
        (
            "Serverless: every request billed at the measured p50 latency (rounded up to the "
            "billing increment) and the memory of one worker; concurrency = load x latency; "
            "each added concurrent instance's first request waits a cold start and counts at "
            "risk. Free tiers, API gateways and provisioned concurrency are not included."
        ),
        (
            f"Prices: {inputs.catalogue.path} ({providers}); list prices, dated per entry; no "
            "free tier, commitment discounts, load balancer, egress or storage."
        ),
        (
            "BentoML configurations are the candidates for the answer; other servers "
            "(baselines) are priced for comparison only."
        ),
        "Cost per million predictions = monthly cost / month's requests (all offered requests).",
    ]
    return items + inputs.capacity.notes + inputs.traffic.notes


def to_json(inputs: Inputs, result: Comparison) -> dict[str, Any]:
    recommended = result.recommended
    traffic = inputs.traffic
    return {
        "generated_at": inputs.generated_at,
        "command": inputs.command,
        "currency": inputs.catalogue.currency,
        "minutes": len(traffic.rps),
        "traffic": {
            "profile": traffic.name,
            "description": traffic.description,
            "peak_rps": traffic.peak_rps,
            "mean_rps": traffic.mean_rps,
            "requests_per_month": traffic.total_requests,
            "notes": traffic.notes,
        },
        "capacity": {
            "source": inputs.capacity.source,
            "bench_path": inputs.capacity.bench_path,
            "generated_at": inputs.capacity.generated_at,
            "machine": inputs.capacity.machine,
            "configs": [c.to_dict() for c in inputs.capacity.configs],
            "excluded": [{"name": n, "reason": r} for n, r in inputs.capacity.excluded],
            "notes": inputs.capacity.notes,
        },
        "policy": asdict(inputs.policy),
        "prices": {
            "path": inputs.catalogue.path,
            "instances": [asdict(i) for i in inputs.catalogue.instances],
            "serverless": [asdict(s) for s in inputs.catalogue.serverless],
        },
        "primary_config": result.primary.name,
        "recommended": recommended.to_dict() if recommended else None,
        "recommended_on_demand": (
            result.recommended_on_demand.to_dict() if result.recommended_on_demand else None
        ),
        "key_options": [o.to_dict() for o in key_options(result)],
        "options": [o.to_dict() for o in sorted(result.options, key=lambda o: o.monthly_cost)],
        "unfit": [{"config": c, "platform": p} for c, p in result.unfit],
        "assumptions": assumptions(inputs, result),
    }


def terminal_table(result: Comparison) -> str:
    header, rows = key_table(result)
    keep = [0, 1, 2, 3, 4, 5, 7, 9]
    header = [header[i] for i in keep]
    rows = [[str(r[i]).replace(" ⭐", " *") for i in keep] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def busiest_day(load: np.ndarray) -> int:
    days = len(load) // MINUTES_PER_DAY
    if days == 0:
        return 0
    totals = load[: days * MINUTES_PER_DAY].reshape(days, MINUTES_PER_DAY).sum(axis=1)
    return int(np.argmax(totals))


def plot_day(result: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auto, fixed = result.traces["autoscale"], result.traces["fixed"]
    day = busiest_day(auto.load)
    window = slice(day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY)
    hours = np.arange(len(auto.load[window])) / 60.0
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(hours, auto.load[window], color="black", lw=1.2, label="offered load")
    ax.step(
        hours,
        auto.running[window] * auto.capacity_rps,
        where="post",
        color="tab:blue",
        label="autoscaled capacity (serving replicas)",
    )
    ax.step(
        hours,
        auto.billed[window] * auto.capacity_rps,
        where="post",
        color="tab:blue",
        ls=":",
        alpha=0.7,
        label="autoscaled replicas billed (incl. starting)",
    )
    ax.step(
        hours,
        fixed.running[window] * fixed.capacity_rps,
        where="post",
        color="tab:orange",
        ls="--",
        label="fixed provisioning for the peak",
    )
    short = auto.excess[window] > 0
    if short.any():
        ax.fill_between(
            hours,
            0,
            auto.load[window],
            where=short,
            color="tab:red",
            alpha=0.3,
            label="shortfall minutes",
        )
    ax.set_xlabel(f"hour of day {day + 1} (the busiest day, UTC)")
    ax.set_ylabel("requests / s")
    ax.set_title(
        f"Traffic vs capacity — {result.primary.name}, {auto.capacity_rps:g} req/s per replica"
    )
    ax.set_xlim(0, 24)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_costs(result: Comparison, path: Path, currency: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = result.primary.name
    chosen = [o for o in result.options if o.config == primary] + [
        o for o in key_options(result) if o.config != primary
    ]
    chosen.sort(key=lambda o: o.monthly_cost, reverse=True)
    labels = [o.label for o in chosen]
    colors = ["tab:green" if o.meets_slo else "tab:red" for o in chosen]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.28 * len(chosen)))
    bars = ax.barh(range(len(chosen)), [o.monthly_cost for o in chosen], color=colors)
    ax.set_yticks(range(len(chosen)), labels, fontsize=7)
    ax.bar_label(bars, [f"{o.monthly_cost:,.0f}" for o in chosen], fontsize=7, padding=2)
    ax.set_xlabel(f"monthly cost ({currency}); green: SLO met, red: SLO missed")
    ax.set_title("Monthly cost per option (configuration | strategy | platform | purchase)")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_all(
    inputs: Inputs, result: Comparison, out_dir: Path, plots: bool = True
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "finops.md",
        "json": out_dir / "finops.json",
        "day_plot": out_dir / DAY_PLOT,
        "cost_plot": out_dir / COST_PLOT,
    }
    paths["markdown"].write_text(markdown(inputs, result), encoding="utf-8")
    paths["json"].write_text(json.dumps(to_json(inputs, result), indent=2) + "\n", encoding="utf-8")
    if not plots:
        return {k: v for k, v in paths.items() if not k.endswith("plot")}
    plot_day(result, paths["day_plot"])
    plot_costs(result, paths["cost_plot"], inputs.catalogue.currency)
    return paths
