"""Dependency vulnerability audit of the pinned set (`make audit`; `make test` runs it after
the tests).

Audits every `name==version` pin of constraints.txt plus the pins of requirements*.txt that
are not in it, exactly as pinned (pip-audit --no-deps: no resolution, no install). Fails
(exit 1) on a known vulnerability that has a fixed version; a vulnerability without a fix is
reported but cannot be acted on by upgrading. Vulnerability data: OSV, falling back to PyPI's
JSON API when OSV is unreachable. Packages the service cannot look up (for example versions
missing from the index it can reach) are listed as not audited; AUDIT_STRICT=1 fails on them.

When neither database can be reached (no network, a proxy refusing), or the one that answers
can look up none of the pins, the audit did not run: it says so and exits 2, or 0 with
`--unreachable-ok` (how `make test` calls it, so that an
offline test run is not failed by the audit). pip-audit failing for any other reason is an
error (exit 1) either way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from iris_pipeline.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;#]+)")
# What requests/urllib3 raise when a host cannot be reached (as pip-audit's traceback shows).
UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|ConnectTimeout|ReadTimeout|NewConnectionError|"
    r"NameResolutionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Network is unreachable|Connection refused|timed out"
)
EXIT_VULNERABLE, EXIT_UNREACHABLE = 1, 2


class Unreachable(Exception):
    """The vulnerability database could not be reached: nothing was audited."""


def pinned_set(files: list[Path]) -> dict[str, str]:
    """name -> version; the first file that pins a name wins (constraints.txt first)."""
    pins: dict[str, str] = {}
    for path in files:
        for line in path.read_text().splitlines():
            match = PIN.match(line.strip())
            if match:
                pins.setdefault(match.group(1).lower().replace("_", "-"), match.group(2))
    return pins


def fixable(report: dict) -> list[str]:
    """`name version: id (fixed in ...)` for every vulnerability that has a fix."""
    found = []
    for dependency in report.get("dependencies", []):
        for vuln in dependency.get("vulns", []):
            if vuln.get("fix_versions"):
                fixes = ", ".join(vuln["fix_versions"])
                found.append(
                    f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})"
                )
    return found


def last_line(stderr: str) -> str:
    """The line of pip-audit's traceback that says what failed (the exception's own line), so
    that a failure reads as one line, not as the tail of a traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if UNREACHABLE.search(line)]
    return (reasons or lines or ["no output"])[-1][:500]


def classify_failure(stderr: str) -> type[Exception]:
    """Unreachable when pip-audit died of a network error, RuntimeError otherwise."""
    return Unreachable if UNREACHABLE.search(stderr) else RuntimeError


def run_pip_audit(requirements: Path, service: str) -> dict:
    """pip-audit's JSON report; raises Unreachable (network) or RuntimeError (anything else)."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps",
             "--disable-pip", "--progress-spinner", "off", "--vulnerability-service", service,
             "--format", "json"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as timeout:
        raise Unreachable(f"pip-audit ({service}) timed out after {timeout.timeout} s") from None
    try:
        return json.loads(result.stdout)
    except ValueError:
        error = classify_failure(result.stderr)
        what = "could not reach its database" if error is Unreachable else "failed"
        raise error(f"pip-audit ({service}) {what}: {last_line(result.stderr)}") from None


def audit(requirements: Path, services: tuple[str, ...] = ("osv", "pypi")) -> tuple[str, dict]:
    """(service, report) of the first service that answered, trying them in order. When none
    answered: RuntimeError if one failed for a reason other than the network, else
    Unreachable."""
    unreachable: list[str] = []
    failures: list[str] = []
    for service in services:
        try:
            return service, run_pip_audit(requirements, service)
        except Unreachable as error:
            print(str(error), file=sys.stderr)
            unreachable.append(service)
        except RuntimeError as error:
            print(str(error), file=sys.stderr)
            failures.append(service)
    if failures:
        raise RuntimeError(f"pip-audit failed ({', '.join(failures)})")
    raise Unreachable(", ".join(unreachable))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--unreachable-ok",
        action="store_true",
        help="exit 0 (after saying so) when no vulnerability database can be reached",
    )
    args = parser.parse_args(argv)
    files = [ROOT / "constraints.txt", ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]
    pins = pinned_set(files)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    try:
        service, report = audit(Path(handle.name))
    except Unreachable as error:
        print(
            f"dependency audit NOT RUN: no vulnerability database reachable ({error}); "
            f"{len(pins)} pins not audited"
            + (" (not failing: --unreachable-ok)" if args.unreachable_ok else "")
        )
        return 0 if args.unreachable_ok else EXIT_UNREACHABLE
    except RuntimeError as error:
        print(f"dependency audit FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        os.unlink(handle.name)
    skipped = [d["name"] for d in report["dependencies"] if "skip_reason" in d]
    if report["dependencies"] and len(skipped) == len(report["dependencies"]):
        # It answered, but for none of the pins (e.g. PyPI's JSON API answering 404 for every
        # version): nothing was audited, which is no more an audit than no answer at all.
        print(
            f"dependency audit NOT RUN: the vulnerability database ({service}) could look up "
            f"none of the {len(pins)} pins"
            + (" (not failing: --unreachable-ok)" if args.unreachable_ok else "")
        )
        return 0 if args.unreachable_ok else EXIT_UNREACHABLE
    vulnerable = fixable(report)
    unfixable = sum(
        1 for d in report["dependencies"] for v in d.get("vulns", []) if not v.get("fix_versions")
    )
    audited = len(report["dependencies"]) - len(skipped)
    print(
        f"dependency audit ({service}): {len(pins)} pins, {audited} audited, "
        f"{len(skipped)} not auditable, {len(vulnerable)} fixable and {unfixable} unfixable "
        f"known vulnerabilities"
    )
    if skipped:
        print(f"  not auditable: {', '.join(sorted(skipped))}")
    for line in vulnerable:
        print(f"  VULNERABLE {line}")
    if vulnerable:
        return EXIT_VULNERABLE
    if skipped and os.environ.get("AUDIT_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
