"""Invariants of the FinOps autoscaler simulation and its cost arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from tools.finops.capacity import ReplicaConfig
from tools.finops.catalogue import parse_catalogue
from tools.finops.errors import FinOpsError
from tools.finops.simulation import (
    Policy,
    autoscale,
    compare,
    desired_replicas,
    fixed,
    replicas_per_instance,
    required_replicas,
)
from tools.finops.traffic import (
    MINUTES_PER_MONTH,
    Traffic,
    constant,
    diurnal,
    spiky,
)

CATALOGUE = parse_catalogue(
    {
        "instances": [
            {
                "name": "small",
                "provider": "aws",
                "region": "us-east-1",
                "vcpu": 2,
                "memory_gib": 4,
                "on_demand_per_hour": 0.085,
                "spot_per_hour": 0.035,
                "source": "test",
                "date": "2025-01",
            },
            {
                "name": "big",
                "provider": "gcp",
                "region": "us-central1",
                "vcpu": 4,
                "memory_gib": 4,
                "on_demand_per_hour": 0.15,
                "spot_per_hour": 0.05,
                "source": "test",
                "date": "2025-01-31",
            },
        ],
        "serverless": [
            {
                "name": "lambda",
                "provider": "aws",
                "region": "us-east-1",
                "price_per_million_requests": 0.2,
                "price_per_gb_second": 0.0000166667,
                "source": "test",
                "date": "2025-01",
            }
        ],
    }
)


def config(rps: float = 50.0, cold_start_s: float = 5.0, vcpu: float = 2.0) -> ReplicaConfig:
    return ReplicaConfig(
        name="cfg",
        kind="flags",
        rps=rps,
        vcpu=vcpu,
        memory_mb=200.0,
        cold_start_s=cold_start_s,
        latency_ms=20.0,
    )


def random_load(seed: int, minutes: int = 3000) -> np.ndarray:
    """A random walk with bursts: the kind of load that exercises scale-up and scale-down."""
    rng = np.random.default_rng(seed)
    walk = np.abs(np.cumsum(rng.normal(0, 15, minutes))) + rng.uniform(0, 50)
    bursts = (rng.random(minutes) < 0.01) * rng.uniform(100, 600, minutes)
    return walk + np.repeat(bursts[::10], 10)[:minutes]


def reference_autoscaler(load: np.ndarray, cfg: ReplicaConfig, policy: Policy):
    """A plain event loop of the documented autoscaler, to check the vectorised version."""
    desired = desired_replicas(load, cfg.rps, policy)
    delay = policy.delay_for(cfg)
    window = max(1, policy.scale_down_window_min)
    ready_at = [-1] * int(desired[0])  # the month starts warm
    billed, running = [], []
    for t in range(len(load)):
        target = int(desired[max(0, t - window + 1) : t + 1].max())
        while len(ready_at) < target:
            ready_at.append(t + delay)
        while len(ready_at) > target:
            ready_at.remove(max(ready_at))  # the newest (still starting) go first
        billed.append(len(ready_at))
        running.append(sum(r <= t for r in ready_at))
    return np.array(billed), np.array(running)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_autoscaler_matches_the_event_loop(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    policy = Policy(
        target_utilization=float(rng.uniform(0.5, 1.0)),
        headroom=float(rng.uniform(0, 0.5)),
        min_replicas=int(rng.integers(1, 3)),
        max_replicas=int(rng.integers(8, 30)),
        scale_up_delay_min=int(rng.integers(0, 6)),
        scale_down_window_min=int(rng.integers(0, 8)),
    )
    load = random_load(seed, minutes=600)
    trace = autoscale(load, config(), policy)
    billed, running = reference_autoscaler(load, config(), policy)
    np.testing.assert_array_equal(trace.billed, billed)
    np.testing.assert_array_equal(trace.running, running)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("delay", [1, 3, 7])
def test_replicas_never_below_demand_outside_the_scale_up_delay(seed: int, delay: int) -> None:
    policy = Policy(
        target_utilization=0.75,
        headroom=0.1,
        min_replicas=1,
        max_replicas=40,
        scale_up_delay_min=delay,
        scale_down_window_min=seed % 4,
    )
    load = random_load(seed)
    trace = autoscale(load, config(), policy)
    needed = np.minimum(required_replicas(load, 50.0), policy.max_replicas)
    # Minutes where no scale-up is pending: desired(t) is not above any desired(t-d .. t).
    windows = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([np.full(delay, trace.desired[0]), trace.desired]), delay + 1
    )
    settled = trace.desired <= windows.min(axis=1)
    assert settled.mean() > 0.3  # the check below covers many minutes
    assert np.all(trace.running[settled] >= needed[settled])
    assert np.all(trace.running[settled] >= trace.desired[settled])
    # Everywhere: capacity lags demand by at most the delay, and starting replicas are billed.
    assert np.all(trace.running >= windows.min(axis=1))
    assert np.all(trace.billed >= trace.running)
    assert np.all(trace.billed >= trace.desired)
    assert trace.billed.min() >= policy.min_replicas
    assert trace.billed.max() <= policy.max_replicas


def test_shortfall_only_during_scale_up_or_at_max_replicas() -> None:
    policy = Policy(min_replicas=1, max_replicas=5, scale_up_delay_min=2, headroom=0.0)
    load = np.array([10.0] * 10 + [400.0] * 10 + [10.0] * 10)  # 400 req/s needs 8 > 5 replicas
    trace = autoscale(load, config(), policy)
    short = trace.excess > 0
    assert short[10:20].all() and not short[:10].any() and not short[20:].any()
    # Minutes 10-11: one replica serving (50 req/s); from 12: the 5 allowed replicas (250).
    expected = (400 - 50) * 2 * 60 + (400 - 250) * 8 * 60
    assert trace.requests_at_risk == pytest.approx(expected)
    assert trace.shortfall_minutes == 10


def test_constant_profile_matches_a_hand_computed_example_to_the_cent() -> None:
    # 100 req/s, 50 req/s per replica at 80 % target utilization, no headroom:
    # ceil(100 / (50 * 0.8)) = 3 replicas, one per 2-vCPU instance, 720 h in the month.
    policy = Policy(target_utilization=0.8, headroom=0.0, min_replicas=1, spot_share=0.5)
    traffic = constant(100.0)
    result = compare(traffic, [config()], CATALOGUE, policy)
    by_key = {(o.strategy, o.platform, o.purchase): o for o in result.options}
    on_demand = by_key[("autoscale", "small", "on-demand")]
    assert round(on_demand.monthly_cost, 2) == 183.60  # 3 x 720 h x $0.085
    assert round(by_key[("autoscale", "small", "spot 50%")].monthly_cost, 2) == 129.60  # x $0.06
    assert round(by_key[("fixed", "small", "on-demand")].monthly_cost, 2) == 183.60
    # "big" holds 2 replicas (4 vCPU), so 2 instances: 2 x 720 x $0.15.
    assert round(by_key[("autoscale", "big", "on-demand")].monthly_cost, 2) == 216.00
    requests = 100 * 60 * MINUTES_PER_MONTH  # 259.2 million
    assert round(on_demand.cost_per_million, 4) == round(183.60 / (requests / 1e6), 4)
    # Lambda: 259.2 M x $0.20/M + 259.2 M x 0.020 s x 200/1024 GB x $0.0000166667.
    serverless = by_key[("serverless", "lambda", "per request")]
    assert round(serverless.monthly_cost, 2) == 68.72
    assert on_demand.shortfall_minutes == 0 and on_demand.meets_slo
    assert result.recommended is not None
    assert result.recommended.platform == "lambda"


@pytest.mark.parametrize(
    "make", [lambda p: constant(p), lambda p: diurnal(p), lambda p: spiky(p, seed=3)]
)
def test_cost_rises_with_traffic(make) -> None:
    policy = Policy()
    previous: dict[tuple[str, str, str], float] = {}
    for peak in (50.0, 200.0, 800.0, 3000.0):
        result = compare(make(peak), [config(rps=120.0)], CATALOGUE, policy)
        costs = {(o.strategy, o.platform, o.purchase): o.monthly_cost for o in result.options}
        for key, cost in costs.items():
            if key in previous:
                assert cost >= previous[key] - 1e-9, key
        previous = costs
    low = compare(make(50.0), [config(rps=120.0)], CATALOGUE, policy)
    high = compare(make(3000.0), [config(rps=120.0)], CATALOGUE, policy)
    assert high.recommended.monthly_cost > low.recommended.monthly_cost


@pytest.mark.parametrize("seed", range(4))
def test_more_headroom_never_lowers_cost(seed: int) -> None:
    traffic = Traffic("random", random_load(seed, MINUTES_PER_MONTH // 10), "random")
    previous = None
    for headroom in (0.0, 0.05, 0.2, 0.5, 1.0):
        policy = Policy(headroom=headroom, min_replicas=1, scale_up_delay_min=2)
        result = compare(traffic, [config()], CATALOGUE, policy)
        costs = {(o.strategy, o.platform, o.purchase): o for o in result.options}
        if previous is not None:
            for key, option in costs.items():
                if option.strategy == "serverless":
                    continue
                assert option.monthly_cost >= previous[key].monthly_cost - 1e-9, key
                assert option.requests_at_risk <= previous[key].requests_at_risk + 1e-6, key
        previous = costs


def test_autoscaling_never_costs_more_than_fixed_peak_provisioning() -> None:
    policy = Policy(scale_down_window_min=10)
    result = compare(diurnal(1000.0), [config(rps=200.0)], CATALOGUE, policy)
    for option in result.options:
        if option.strategy == "autoscale":
            twin = result.best(
                config=option.config,
                platform=option.platform,
                strategy="fixed",
                purchase=option.purchase,
            )
            assert option.monthly_cost < twin.monthly_cost


def test_fixed_is_sized_for_the_peak() -> None:
    policy = Policy(target_utilization=0.5, headroom=0.0, min_replicas=1)
    load = np.array([10.0, 99.0, 30.0])
    trace = fixed(load, config(), policy)
    assert trace.billed.tolist() == [4, 4, 4]  # ceil(99 / 25)
    assert trace.shortfall_minutes == 0


def test_replicas_per_instance_uses_cpu_and_memory() -> None:
    small, big = CATALOGUE.instances
    policy = Policy(reserved_memory_gib=0.5)
    assert replicas_per_instance(small, config(vcpu=1.0), policy) == 2
    assert replicas_per_instance(big, config(vcpu=0.5), policy) == 8
    heavy = ReplicaConfig("heavy", "flags", 50, 1.0, 2000.0, 5, 20)
    assert replicas_per_instance(big, heavy, policy) == 1  # 3.5 GiB left for 2000 MB replicas
    assert replicas_per_instance(small, config(vcpu=3.0), policy) == 0


def test_spot_share_mixes_prices_and_zero_share_means_on_demand_only() -> None:
    result = compare(constant(100.0), [config()], CATALOGUE, Policy(spot_share=0.0))
    assert {o.purchase for o in result.options} == {"on-demand", "per request"}
    full = compare(constant(100.0), [config()], CATALOGUE, Policy(spot_share=1.0))
    spot = full.best(strategy="autoscale", platform="small", purchase="spot 100%")
    demand = full.best(strategy="autoscale", platform="small", purchase="on-demand")
    assert spot.monthly_cost == pytest.approx(demand.monthly_cost * 0.035 / 0.085)


def test_scale_up_delay_defaults_to_cold_start_in_whole_minutes() -> None:
    policy = Policy()
    assert policy.delay_for(config(cold_start_s=0.0)) == 1
    assert policy.delay_for(config(cold_start_s=5.0)) == 1
    assert policy.delay_for(config(cold_start_s=61.0)) == 2
    assert Policy(scale_up_delay_min=4).delay_for(config(cold_start_s=5.0)) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_utilization": 0.0}, "target utilization"),
        ({"target_utilization": 1.5}, "target utilization"),
        ({"headroom": -0.1}, "headroom"),
        ({"min_replicas": 0}, "min replicas"),
        ({"min_replicas": 5, "max_replicas": 2}, "max replicas"),
        ({"spot_share": 2.0}, "spot share"),
        ({"scale_up_delay_min": -1}, "scale-up delay"),
    ],
)
def test_bad_policy_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(FinOpsError, match=message):
        Policy(**kwargs)


def test_month_simulation_is_fast() -> None:
    import time

    started = time.perf_counter()
    configs = [config(rps=r) for r in (100.0, 300.0, 900.0)]
    configs = [
        ReplicaConfig(f"c{i}", "bentoml", c.rps, 1.0, 200, 5, 20) for i, c in enumerate(configs)
    ]
    compare(spiky(2000.0), configs, CATALOGUE, Policy())
    assert time.perf_counter() - started < 2.0
