"""Which model version a running service uses, asked of the service itself.

The service publishes the version it serves in `/metrics` as an info metric,
`iris_model_info{...} 1`, whose labels name BentoML tags (and, where it serves more than one
model, their role). A service that does not answer, or does not publish the metric, is
reported as such: `make models` prints the registry either way.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

DEFAULT_SERVICE_URL = "http://127.0.0.1:3000"
INFO_METRIC = "iris_model_info"
_SAMPLE = re.compile(rf"^{INFO_METRIC}\{{(?P<labels>[^}}]*)\}}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ServiceReport:
    """`answered`: the service answered /metrics; `tags`: BentoML tag -> role ("" if none)."""

    url: str
    answered: bool
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.answered:
            return f"no running service at {self.url}"
        if not self.tags:
            return f"the service at {self.url} does not report its model ({INFO_METRIC})"
        used = ", ".join(f"{tag} ({role})" if role else tag for tag, role in self.tags.items())
        return f"the service at {self.url} uses {used}"


def parse_model_info(metrics_text: str, model_name: str) -> dict[str, str]:
    """BentoML tags of `model_name` named by non-zero `iris_model_info` samples, with the
    sample's `role` label when it has one."""
    tags: dict[str, str] = {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or float(match["value"]) == 0:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        for value in labels.values():
            if value.startswith(f"{model_name}:"):
                tags[value] = labels.get("role", "")
    return tags


def ask_service(url: str, model_name: str, timeout: float = 3.0) -> ServiceReport:
    """GET <url>/metrics and read the models it names; never raises for a missing service."""
    url = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, ValueError):
        return ServiceReport(url, answered=False)
    return ServiceReport(url, answered=True, tags=parse_model_info(text, model_name))
