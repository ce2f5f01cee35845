"""Price catalogue: instance types and serverless options, loaded from YAML and validated."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools.finops.errors import FinOpsError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


@dataclass(frozen=True)
class InstanceType:
    name: str
    provider: str
    region: str
    vcpu: float
    memory_gib: float
    on_demand_per_hour: float
    spot_per_hour: float
    source: str
    date: str
    notes: str = ""

    def price_per_hour(self, spot_share: float) -> float:
        """Blended $/h when `spot_share` of the instance-hours run on spot."""
        return spot_share * self.spot_per_hour + (1.0 - spot_share) * self.on_demand_per_hour


@dataclass(frozen=True)
class ServerlessOption:
    name: str
    provider: str
    region: str
    price_per_million_requests: float
    price_per_gb_second: float
    source: str
    date: str
    price_per_cpu_second: float = 0.0
    cpu_units: float = 0.0
    memory_mb: float | None = None
    min_memory_mb: float = 128.0
    memory_step_mb: float = 1.0
    billing_increment_ms: float = 1.0
    notes: str = ""

    def billed_memory_mb(self, needed_mb: float) -> float:
        """Memory the function is configured (and billed) with for a process needing `needed_mb`."""
        if self.memory_mb is not None:
            return self.memory_mb
        steps = math.ceil(max(needed_mb, self.min_memory_mb) / self.memory_step_mb)
        return steps * self.memory_step_mb

    def billed_duration_s(self, duration_ms: float) -> float:
        """Per-request duration after rounding up to the billing increment."""
        return math.ceil(duration_ms / self.billing_increment_ms) * self.billing_increment_ms / 1000


@dataclass(frozen=True)
class Catalogue:
    path: str
    currency: str
    instances: tuple[InstanceType, ...]
    serverless: tuple[ServerlessOption, ...]

    @property
    def providers(self) -> list[str]:
        found = {i.provider for i in self.instances} | {s.provider for s in self.serverless}
        return sorted(found)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a price catalogue (the shipped one when `path` is None)."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FinOpsError(f"cannot read price catalogue {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise FinOpsError(f"price catalogue {path} is not valid YAML{where}") from None
    return parse_catalogue(data, _display(path))


def _display(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_catalogue(data: Any, origin: str = "<catalogue>") -> Catalogue:
    """Validate an already-parsed catalogue mapping."""
    if not isinstance(data, dict):
        raise FinOpsError(f"price catalogue {origin}: expected a mapping with 'instances'")
    currency = str(data.get("currency", "USD"))
    raw_instances = data.get("instances")
    if not isinstance(raw_instances, list) or not raw_instances:
        raise FinOpsError(f"price catalogue {origin}: 'instances' must be a non-empty list")
    raw_serverless = data.get("serverless") or []
    if not isinstance(raw_serverless, list):
        raise FinOpsError(f"price catalogue {origin}: 'serverless' must be a list")
    instances = tuple(_instance(item, i, origin) for i, item in enumerate(raw_instances))
    serverless = tuple(_serverless(item, i, origin) for i, item in enumerate(raw_serverless))
    names = [x.name for x in instances] + [x.name for x in serverless]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FinOpsError(f"price catalogue {origin}: duplicate names {', '.join(duplicates)}")
    return Catalogue(origin, currency, instances, serverless)


class _Entry:
    """Field access for one catalogue entry, with errors naming the entry and the field."""

    def __init__(self, item: Any, kind: str, index: int, origin: str) -> None:
        if not isinstance(item, dict):
            raise FinOpsError(f"price catalogue {origin}: {kind}[{index}] must be a mapping")
        self.item = item
        name = item.get("name")
        self.where = f"price catalogue {origin}: {kind} '{name or f'#{index}'}'"

    def text(self, key: str, default: str | None = None) -> str:
        value = self.item.get(key, default)
        if value is None or str(value).strip() == "":
            raise FinOpsError(f"{self.where}: missing '{key}'")
        return str(value).strip()

    def date(self, key: str = "date") -> str:
        value = self.item.get(key)
        if isinstance(value, dt.date):
            return value.isoformat()
        text = self.text(key)
        if not _DATE.match(text):
            raise FinOpsError(f"{self.where}: '{key}' must be YYYY-MM or YYYY-MM-DD, got {text!r}")
        return text

    def number(self, key: str, *, default: float | None = None, positive: bool = False) -> float:
        value = self.item.get(key, default)
        if value is None:
            raise FinOpsError(f"{self.where}: missing '{key}'")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FinOpsError(f"{self.where}: '{key}' must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            need = "> 0" if positive else ">= 0"
            raise FinOpsError(f"{self.where}: '{key}' must be {need}, got {value!r}")
        return number


def _instance(item: Any, index: int, origin: str) -> InstanceType:
    e = _Entry(item, "instances", index, origin)
    on_demand = e.number("on_demand_per_hour", positive=True)
    spot = e.number("spot_per_hour", positive=True)
    if spot > on_demand:
        raise FinOpsError(
            f"{e.where}: spot_per_hour ({spot}) exceeds on_demand_per_hour ({on_demand})"
        )
    return InstanceType(
        name=e.text("name"),
        provider=e.text("provider"),
        region=e.text("region"),
        vcpu=e.number("vcpu", positive=True),
        memory_gib=e.number("memory_gib", positive=True),
        on_demand_per_hour=on_demand,
        spot_per_hour=spot,
        source=e.text("source"),
        date=e.date(),
        notes=str(item.get("notes", "") or ""),
    )


def _serverless(item: Any, index: int, origin: str) -> ServerlessOption:
    e = _Entry(item, "serverless", index, origin)
    memory = item.get("memory_mb")
    return ServerlessOption(
        name=e.text("name"),
        provider=e.text("provider"),
        region=e.text("region"),
        price_per_million_requests=e.number("price_per_million_requests"),
        price_per_gb_second=e.number("price_per_gb_second"),
        source=e.text("source"),
        date=e.date(),
        price_per_cpu_second=e.number("price_per_cpu_second", default=0.0),
        cpu_units=e.number("cpu_units", default=0.0),
        memory_mb=None if memory is None else e.number("memory_mb", positive=True),
        min_memory_mb=e.number("min_memory_mb", default=128.0, positive=True),
        memory_step_mb=e.number("memory_step_mb", default=1.0, positive=True),
        billing_increment_ms=e.number("billing_increment_ms", default=1.0, positive=True),
        notes=str(item.get("notes", "") or ""),
    )
