"""Dependency vulnerability audit of the pinned set (`make audit`, part of `make test`).

Audits every `name==version` pin of constraints.txt plus the pins of requirements*.txt that
are not in it, exactly as pinned (pip-audit --no-deps: no resolution, no install). Fails
(exit 1) on a known vulnerability that has a fixed version; a vulnerability without a fix is
reported but cannot be acted on by upgrading. Vulnerability data: OSV, falling back to PyPI's
JSON API when OSV is unreachable. Packages the service cannot look up (for example versions
missing from the index it can reach) are listed as not audited; AUDIT_STRICT=1 fails on them.
"""

from __future__ import annotations

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


def run_pip_audit(requirements: Path, service: str) -> dict | None:
    result = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
         "--progress-spinner", "off", "--vulnerability-service", service, "--format", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        return json.loads(result.stdout)
    except ValueError:
        print(f"pip-audit ({service}) failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None


def main() -> int:
    files = [ROOT / "constraints.txt", ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]
    pins = pinned_set(files)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    try:
        for service in ("osv", "pypi"):
            report = run_pip_audit(Path(handle.name), service)
            if report is not None:
                break
        else:
            print("dependency audit: no vulnerability service reachable", file=sys.stderr)
            return 1
    finally:
        os.unlink(handle.name)
    skipped = [d["name"] for d in report["dependencies"] if "skip_reason" in d]
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
        return 1
    if skipped and os.environ.get("AUDIT_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
