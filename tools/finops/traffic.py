"""Traffic profiles: offered load in requests/s for every minute of a 30-day month."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.finops.errors import FinOpsError

MINUTES_PER_DAY = 24 * 60
DAYS_PER_MONTH = 30
MINUTES_PER_MONTH = DAYS_PER_MONTH * MINUTES_PER_DAY  # 43,200
PROFILES = ("constant", "diurnal", "spiky", "csv")


@dataclass
class Traffic:
    """Mean offered load (requests/s) of each minute; `notes` say how it was built."""

    name: str
    rps: np.ndarray
    description: str
    notes: list[str] = field(default_factory=list)

    @property
    def peak_rps(self) -> float:
        return float(self.rps.max())

    @property
    def mean_rps(self) -> float:
        return float(self.rps.mean())

    @property
    def total_requests(self) -> float:
        return float(self.rps.sum() * 60.0)


def _check_peak(peak_rps: float) -> None:
    if not math.isfinite(peak_rps) or peak_rps <= 0:
        raise FinOpsError(f"peak requests/s must be > 0, got {peak_rps}")


def _daily_curve(minutes: np.ndarray, peak_hour: float) -> np.ndarray:
    """0 at the trough, 1 at `peak_hour` (a raised cosine with a 24 h period)."""
    hours = (minutes % MINUTES_PER_DAY) / 60.0
    return (1.0 + np.cos(2.0 * np.pi * (hours - peak_hour) / 24.0)) / 2.0


def constant(peak_rps: float, minutes: int = MINUTES_PER_MONTH) -> Traffic:
    """The same load every minute."""
    _check_peak(peak_rps)
    return Traffic("constant", np.full(minutes, float(peak_rps)), f"constant {peak_rps:g} req/s")


def diurnal(
    peak_rps: float,
    trough_ratio: float = 0.2,
    peak_hour: float = 14.0,
    minutes: int = MINUTES_PER_MONTH,
) -> Traffic:
    """A daily cycle from `trough_ratio * peak` at night up to `peak` at `peak_hour` (UTC)."""
    _check_peak(peak_rps)
    if not 0 <= trough_ratio <= 1:
        raise FinOpsError(f"trough ratio must be between 0 and 1, got {trough_ratio}")
    if not 0 <= peak_hour < 24:
        raise FinOpsError(f"peak hour must be in [0, 24), got {peak_hour}")
    t = np.arange(minutes)
    trough = trough_ratio * peak_rps
    rps = trough + (peak_rps - trough) * _daily_curve(t, peak_hour)
    text = f"diurnal {trough:g}..{peak_rps:g} req/s, peak at {peak_hour:g}:00 UTC"
    return Traffic("diurnal", rps, text)


def spiky(
    peak_rps: float,
    base_ratio: float = 0.3,
    trough_ratio: float = 0.2,
    bursts_per_day: float = 4.0,
    burst_minutes: int = 10,
    peak_hour: float = 14.0,
    seed: int = 0,
    minutes: int = MINUTES_PER_MONTH,
) -> Traffic:
    """A diurnal base peaking at `base_ratio * peak`, plus bursts that jump straight to `peak`.

    Burst starts are uniform over the month (`bursts_per_day` on average, seeded), each lasting
    between half and the full `burst_minutes`.
    """
    _check_peak(peak_rps)
    if not 0 < base_ratio <= 1:
        raise FinOpsError(f"base ratio must be in (0, 1], got {base_ratio}")
    if bursts_per_day < 0 or burst_minutes < 1:
        raise FinOpsError("bursts per day must be >= 0 and burst minutes >= 1")
    base = diurnal(base_ratio * peak_rps, trough_ratio, peak_hour, minutes).rps
    rng = np.random.default_rng(seed)
    count = int(rng.poisson(bursts_per_day * minutes / MINUTES_PER_DAY))
    starts = rng.integers(0, minutes, size=count)
    lengths = rng.integers(max(1, burst_minutes // 2), burst_minutes + 1, size=count)
    in_burst = np.zeros(minutes + 1, dtype=np.int64)
    np.add.at(in_burst, starts, 1)
    np.add.at(in_burst, np.minimum(starts + lengths, minutes), -1)
    bursting = np.cumsum(in_burst[:minutes]) > 0
    rps = np.where(bursting, float(peak_rps), base)
    text = (
        f"spiky: diurnal base up to {base_ratio * peak_rps:g} req/s plus {count} bursts "
        f"to {peak_rps:g} req/s ({burst_minutes // 2}-{burst_minutes} min, seed {seed})"
    )
    return Traffic("spiky", rps, text)


def from_csv(
    path: str | Path, peak_rps: float | None = None, minutes: int = MINUTES_PER_MONTH
) -> Traffic:
    """Requests per minute from a CSV (one row per minute).

    The count is taken from a column named `requests` (or `requests_per_minute`), otherwise from
    the last column; a header row is optional. Shorter series are repeated to fill the month,
    longer ones truncated. With `peak_rps` the series is rescaled so its busiest minute has it.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    except OSError as exc:
        raise FinOpsError(f"cannot read traffic CSV {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FinOpsError(f"traffic CSV {path} is not UTF-8 text") from None
    if not rows:
        raise FinOpsError(f"traffic CSV {path} is empty")
    column, first = -1, 0
    if not _is_number(rows[0][-1]):  # a header
        header = [c.strip().lower() for c in rows[0]]
        for wanted in ("requests", "requests_per_minute"):
            if wanted in header:
                column = header.index(wanted)
                break
        first = 1
    values = []
    for line, row in enumerate(rows[first:], start=first + 1):
        cell = row[column].strip() if -len(row) <= column < len(row) else ""
        if not _is_number(cell):
            raise FinOpsError(
                f"traffic CSV {path} line {line}: {cell!r} is not a number of requests"
            )
        value = float(cell)
        if value < 0:
            raise FinOpsError(f"traffic CSV {path} line {line}: negative request count {value:g}")
        values.append(value)
    if not values:
        raise FinOpsError(f"traffic CSV {path} has a header but no data rows")
    series = np.asarray(values) / 60.0
    if series.max() <= 0:
        raise FinOpsError(f"traffic CSV {path} has no requests at all")
    notes = []
    if len(series) < minutes:
        notes.append(f"the CSV's {len(series)} minutes were repeated to fill {minutes} minutes")
        series = np.resize(series, minutes)
    elif len(series) > minutes:
        notes.append(f"only the first {minutes} of the CSV's {len(series)} minutes were used")
        series = series[:minutes]
    text = f"CSV {path.name} ({len(values)} minutes, peak {series.max():g} req/s)"
    if peak_rps is not None:
        _check_peak(peak_rps)
        series = series * (peak_rps / series.max())
        text += f", rescaled to peak {peak_rps:g} req/s"
    return Traffic("csv", series, text, notes)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
