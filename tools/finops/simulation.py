"""Minute-by-minute autoscaler simulation and the monthly cost of each deployment option.

Definitions (all per minute t, load L(t) in requests/s, replica capacity C in requests/s):

* target utilization u: the autoscaler keeps each replica at most u busy, i.e. plans with
  u * C requests/s per replica (like an HPA CPU target);
* headroom h: extra traffic the plan must absorb on top of the observed load (h = 0.1 plans
  for 10 % more than L(t));
* desired(t) = clamp(ceil(L(t) * (1 + h) / (u * C)), min_replicas, max_replicas);
* scale-down stabilisation window w: the replica count kept is the largest desired count of
  the last w minutes (w <= 1: scale down at once), as Kubernetes' HPA does (default 5 min);
* scale-up delay d: a replica asked for at t serves from t + d (cold start, rounded up to whole
  minutes, at least 1). running(t) = min(kept(t-d .. t)): replicas still starting do not serve,
  and scaling down removes the newest (still starting) replicas first;
* billed replicas are the kept ones (a starting replica's instance is already paid for);
* shortfall: L(t) > running(t) * C; requests at risk = (L(t) - running(t) * C) * 60 s.

Replicas are packed onto instances: instances(t) = ceil(billed(t) / replicas_per_instance),
where replicas_per_instance is limited by both vCPU and memory (after a per-instance reserve).
Cost = sum over minutes of instances(t) * blended $/h / 60, with the blended price
spot_share * spot + (1 - spot_share) * on-demand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tools.finops.capacity import ReplicaConfig
from tools.finops.catalogue import Catalogue, InstanceType, ServerlessOption
from tools.finops.errors import FinOpsError
from tools.finops.traffic import Traffic

_EPS = 1e-9


@dataclass(frozen=True)
class Policy:
    slo_p99_ms: float = 100.0
    target_utilization: float = 0.7
    headroom: float = 0.1
    min_replicas: int = 2
    max_replicas: int = 100
    scale_up_delay_min: int | None = None  # None: the replica's cold start, rounded up
    scale_down_window_min: int = 5
    spot_share: float = 0.5  # share of instance-hours on spot in the "spot mix" options
    max_risk_fraction: float = 0.001  # SLO met when at most this share of requests is at risk
    reserved_memory_gib: float = 0.5  # per instance, for the OS / kubelet
    reserved_vcpu: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.slo_p99_ms > 0, f"latency SLO must be > 0 ms, got {self.slo_p99_ms}"),
            (
                0 < self.target_utilization <= 1,
                f"target utilization must be in (0, 1], got {self.target_utilization}",
            ),
            (
                0 <= self.headroom <= 10,
                f"headroom must be in [0, 10], got {self.headroom}",
            ),
            (
                self.min_replicas >= 1,
                f"min replicas must be >= 1, got {self.min_replicas}",
            ),
            (
                self.max_replicas >= self.min_replicas,
                f"max replicas ({self.max_replicas}) must be >= min replicas ({self.min_replicas})",
            ),
            (
                self.scale_up_delay_min is None or self.scale_up_delay_min >= 0,
                f"scale-up delay must be >= 0 minutes, got {self.scale_up_delay_min}",
            ),
            (
                self.scale_down_window_min >= 0,
                f"scale-down window must be >= 0 minutes, got {self.scale_down_window_min}",
            ),
            (
                0 <= self.spot_share <= 1,
                f"spot share must be in [0, 1], got {self.spot_share}",
            ),
            (
                0 <= self.max_risk_fraction < 1,
                f"max risk fraction must be in [0, 1), got {self.max_risk_fraction}",
            ),
            (self.reserved_memory_gib >= 0, "reserved memory must be >= 0"),
            (self.reserved_vcpu >= 0, "reserved vCPU must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise FinOpsError(message)

    def delay_for(self, config: ReplicaConfig) -> int:
        if self.scale_up_delay_min is not None:
            return self.scale_up_delay_min
        return max(1, math.ceil(config.cold_start_s / 60.0))


@dataclass
class Trace:
    """Replica counts per minute for one serving configuration and policy."""

    load: np.ndarray
    capacity_rps: float
    desired: np.ndarray
    billed: np.ndarray
    running: np.ndarray

    @property
    def excess(self) -> np.ndarray:
        return np.maximum(self.load - self.running * self.capacity_rps, 0.0)

    @property
    def shortfall_minutes(self) -> int:
        return int(np.count_nonzero(self.excess > _EPS))

    @property
    def requests_at_risk(self) -> float:
        return float(self.excess.sum() * 60.0)


def required_replicas(load: np.ndarray, capacity_rps: float) -> np.ndarray:
    """The fewest replicas that serve the load at full capacity (no utilization target)."""
    return np.ceil(load / capacity_rps - _EPS).astype(np.int64)


def desired_replicas(load: np.ndarray, capacity_rps: float, policy: Policy) -> np.ndarray:
    per_replica = capacity_rps * policy.target_utilization
    raw = np.ceil(load * (1.0 + policy.headroom) / per_replica - _EPS).astype(np.int64)
    return np.clip(raw, policy.min_replicas, policy.max_replicas)


def _rolling(values: np.ndarray, window: int, reduce: Any) -> np.ndarray:
    """reduce (np.maximum / np.minimum) over values[t-window+1 .. t]; before t=0 is values[0]."""
    out = values.copy()
    span = 1
    while span < window:
        step = min(span, window - span)
        shifted = np.concatenate([np.full(step, out[0]), out[:-step]])
        out = reduce(out, shifted)
        span += step
    return out


def autoscale(load: np.ndarray, config: ReplicaConfig, policy: Policy) -> Trace:
    """Simulate the autoscaler; the month starts warm (the first minute's replicas are ready)."""
    desired = desired_replicas(load, config.rps, policy)
    kept = _rolling(desired, max(1, policy.scale_down_window_min), np.maximum)
    running = _rolling(kept, policy.delay_for(config) + 1, np.minimum)
    return Trace(load, config.rps, desired, kept, running)


def fixed(load: np.ndarray, config: ReplicaConfig, policy: Policy) -> Trace:
    """A constant fleet sized, with the same rule, for the busiest minute."""
    peak = desired_replicas(np.array([load.max()]), config.rps, policy)[0]
    replicas = np.full(len(load), peak, dtype=np.int64)
    return Trace(load, config.rps, replicas, replicas, replicas)


def replicas_per_instance(instance: InstanceType, config: ReplicaConfig, policy: Policy) -> int:
    """How many replicas fit on one instance, by vCPU and by memory (0: it does not fit)."""
    by_cpu = (instance.vcpu - policy.reserved_vcpu) / config.vcpu
    by_memory = (instance.memory_gib - policy.reserved_memory_gib) * 1024.0 / config.memory_mb
    return max(0, math.floor(min(by_cpu, by_memory) + _EPS))


@dataclass
class Option:
    """One priced deployment option and its SLO risk over the month."""

    config: str
    config_kind: str
    strategy: str  # "autoscale", "fixed" or "serverless"
    platform: str  # instance type or serverless option name
    provider: str
    purchase: str  # "on-demand", "spot NN%" or "per request"
    monthly_cost: float
    cost_per_million: float
    shortfall_minutes: int
    requests_at_risk: float
    risk_fraction: float
    meets_slo: bool
    replicas_per_instance: int | None = None
    avg_instances: float | None = None
    peak_instances: int | None = None
    avg_replicas: float | None = None
    peak_replicas: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.config} | {self.strategy} | {self.platform} | {self.purchase}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        return data


def _purchases(policy: Policy) -> list[tuple[str, float]]:
    options = [("on-demand", 0.0)]
    if policy.spot_share > 0:
        options.append((f"spot {policy.spot_share:.0%}", policy.spot_share))
    return options


def instance_options(
    trace: Trace,
    strategy: str,
    config: ReplicaConfig,
    instance: InstanceType,
    policy: Policy,
    total_requests: float,
) -> list[Option]:
    per_instance = replicas_per_instance(instance, config, policy)
    if per_instance == 0:
        return []
    instances = np.ceil(trace.billed / per_instance - _EPS).astype(np.int64)
    instance_hours = float(instances.sum()) / 60.0
    at_risk = trace.requests_at_risk
    risk = at_risk / total_requests if total_requests > 0 else 0.0
    result = []
    for purchase, share in _purchases(policy):
        cost = instance_hours * instance.price_per_hour(share)
        result.append(
            Option(
                config=config.name,
                config_kind=config.kind,
                strategy=strategy,
                platform=instance.name,
                provider=instance.provider,
                purchase=purchase,
                monthly_cost=cost,
                cost_per_million=cost / (total_requests / 1e6) if total_requests else math.inf,
                shortfall_minutes=trace.shortfall_minutes,
                requests_at_risk=at_risk,
                risk_fraction=risk,
                meets_slo=risk <= policy.max_risk_fraction,
                replicas_per_instance=per_instance,
                avg_instances=float(instances.mean()),
                peak_instances=int(instances.max()),
                avg_replicas=float(trace.billed.mean()),
                peak_replicas=int(trace.billed.max()),
            )
        )
    return result


def serverless_option(
    load: np.ndarray, config: ReplicaConfig, option: ServerlessOption, policy: Policy
) -> Option | None:
    """Per-request pricing: requests + GB-seconds (+ CPU-seconds) at the measured latency.

    Concurrency follows Little's law (load x duration). Each new concurrent instance starts
    cold, so its first request is counted at risk when the cold start exceeds the SLO.
    """
    needed_mb = config.memory_mb / max(1, config.workers)  # one worker process per instance
    memory_mb = option.billed_memory_mb(needed_mb)
    if memory_mb < needed_mb:
        return None
    total = float(load.sum() * 60.0)
    duration_s = option.billed_duration_s(config.latency_ms)
    cost = total / 1e6 * option.price_per_million_requests
    cost += total * duration_s * memory_mb / 1024.0 * option.price_per_gb_second
    cost += total * duration_s * option.cpu_units * option.price_per_cpu_second
    concurrency = np.ceil(load * config.latency_ms / 1000.0 - _EPS)
    starts = np.maximum(np.diff(concurrency, prepend=concurrency[0]), 0.0)
    if config.cold_start_s * 1000.0 <= policy.slo_p99_ms:
        starts = np.zeros_like(starts)
    at_risk = float(starts.sum())
    risk = at_risk / total if total > 0 else 0.0
    notes = [f"{memory_mb:g} MB, billed {duration_s * 1000:g} ms per request"]
    return Option(
        config=config.name,
        config_kind=config.kind,
        strategy="serverless",
        platform=option.name,
        provider=option.provider,
        purchase="per request",
        monthly_cost=cost,
        cost_per_million=cost / (total / 1e6) if total else math.inf,
        shortfall_minutes=int(np.count_nonzero(starts)),
        requests_at_risk=at_risk,
        risk_fraction=risk,
        meets_slo=risk <= policy.max_risk_fraction,
        notes=notes,
    )


@dataclass
class Comparison:
    options: list[Option]
    primary: ReplicaConfig
    traces: dict[str, Trace]  # "autoscale" and "fixed" traces of the primary configuration
    unfit: list[tuple[str, str]]  # (configuration, platform) pairs where a replica does not fit

    @property
    def recommended(self) -> Option | None:
        """The cheapest option meeting the SLO; baselines (other servers) are only compared."""
        meeting = [o for o in self.options if o.meets_slo and o.config_kind != "baseline"]
        return min(meeting, key=lambda o: o.monthly_cost) if meeting else None

    @property
    def recommended_on_demand(self) -> Option | None:
        """The cheapest SLO-meeting option with no spot capacity (no interruption risk)."""
        meeting = [
            o
            for o in self.options
            if o.meets_slo and o.config_kind != "baseline" and not o.purchase.startswith("spot")
        ]
        return min(meeting, key=lambda o: o.monthly_cost) if meeting else None

    def best(self, **match: str) -> Option | None:
        """Cheapest SLO-meeting option whose fields equal `match` (or the least risky one)."""
        found = [o for o in self.options if all(getattr(o, k) == v for k, v in match.items())]
        if not found:
            return None
        meeting = [o for o in found if o.meets_slo]
        if meeting:
            return min(meeting, key=lambda o: o.monthly_cost)
        return min(found, key=lambda o: (o.risk_fraction, o.monthly_cost))


def compare(
    traffic: Traffic,
    configs: list[ReplicaConfig],
    catalogue: Catalogue,
    policy: Policy,
    primary: str | None = None,
) -> Comparison:
    """Every configuration x strategy x instance type x purchase option, plus serverless."""
    if not configs:
        raise FinOpsError("no serving configuration to simulate")
    load = traffic.rps
    total = traffic.total_requests
    options: list[Option] = []
    unfit: list[tuple[str, str]] = []
    traces: dict[str, dict[str, Trace]] = {}
    for config in configs:
        traces[config.name] = {
            "autoscale": autoscale(load, config, policy),
            "fixed": fixed(load, config, policy),
        }
        for instance in catalogue.instances:
            if replicas_per_instance(instance, config, policy) == 0:
                unfit.append((config.name, instance.name))
                continue
            for strategy, trace in traces[config.name].items():
                options += instance_options(trace, strategy, config, instance, policy, total)
        for serverless in catalogue.serverless:
            option = serverless_option(load, config, serverless, policy)
            if option is None:
                unfit.append((config.name, serverless.name))
            else:
                options.append(option)
    if not options:
        raise FinOpsError("no instance type in the catalogue can hold one replica")
    chosen = _primary(configs, options, primary)
    return Comparison(options, chosen, traces[chosen.name], unfit)


def _primary(
    configs: list[ReplicaConfig], options: list[Option], name: str | None
) -> ReplicaConfig:
    """The configuration the detailed tables use: `name`, else the cheapest non-baseline one."""
    by_name = {c.name: c for c in configs}
    if name is not None:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise FinOpsError(f"run {name!r} is not a usable configuration (usable: {known})")
        return by_name[name]
    candidates = [c for c in configs if c.kind != "baseline"] or configs

    def cheapest(config: ReplicaConfig) -> tuple[int, float]:
        mine = [o for o in options if o.config == config.name and o.strategy != "serverless"]
        meeting = [o.monthly_cost for o in mine if o.meets_slo]
        if meeting:
            return 0, min(meeting)
        return 1, min((o.monthly_cost for o in mine), default=math.inf)

    return min(candidates, key=cheapest)
