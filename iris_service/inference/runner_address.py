"""Where the API service reaches its runner, checked before anything starts.

`start-http-server --service-name IrisClassifier --depends IrisModelRunner=<url>` (or
BENTOML_SERVE_DEPENDS) serves the API tier alone and points it at a runner tier elsewhere
(docs/deployment.md, "tiers"). BentoML builds a dependency whose name is not in the
`--depends` map *inside the API process*, silently: a misspelt name, or a forgotten flag,
would load the costly model into every API pod and never reach the runner tier. So the
supervisor process, which imports the service before it starts any worker, refuses to start
with one line and a non-zero exit when:

- the API service is served alone and no `--depends` names the runner;
- a `--depends` names a service the API does not depend on;
- the URL is malformed (not http://, https:// or tcp:// with a host and a port);
- the URL's host does not resolve (a Service that does not exist). A host that resolves but
  refuses connections is a runner tier that is not up yet: the API starts and answers 503
  with Retry-After for runner-bound work until a runner replica answers.

In the workers, `runner_is_remote()` says whether the runner is another tier rather than a
process of the same server: the supervisor, having checked a `--depends` that names the
runner, leaves its URL in TIER_MARKER, which the workers it starts inherit. (The URL scheme
would not tell: `bentoml serve` reaches its own runner over tcp://127.0.0.1 too, on WSL or
with BENTOML_NO_UDS.)
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

API_SERVICE = "IrisClassifier"
RUNNER_SERVICE = "IrisModelRunner"
REMOTE_SCHEMES = ("http", "https", "tcp")
START_COMMAND = "start-http-server"
# Set by the supervisor for its workers (not a setting to set by hand).
TIER_MARKER = "IRIS_RUNNER_TIER_URL"


class RunnerAddressError(ValueError):
    """A `--depends` configuration the API must not start with."""


def parse_depends(depends: Iterable[str]) -> dict[str, str]:
    """`["Name=url", ...]` as BentoML reads it (`--depends`, BENTOML_SERVE_DEPENDS)."""
    mapping = {}
    for item in depends:
        name, equals, url = item.partition("=")
        if not equals or not name:
            raise RunnerAddressError(f"--depends {item!r} is not <Service>=<url>")
        mapping[name] = url
    return mapping


def check_url(url: str, resolve: bool = True) -> None:
    """RunnerAddressError unless `url` is a remote URL with a host and a port that resolve."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RunnerAddressError(f"runner URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in REMOTE_SCHEMES or not parts.hostname or port is None:
        raise RunnerAddressError(
            f"runner URL {url!r} is malformed: expected http://<host>:<port> (or https://, tcp://)"
        )
    if resolve:
        try:
            socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise RunnerAddressError(
                f"runner URL {url!r}: host {parts.hostname!r} does not resolve ({exc})"
            ) from None


def check_depends(
    service_name: str, depends: Mapping[str, str], dependencies: Iterable[str], resolve: bool = True
) -> None:
    """The checks of the module's docstring for `start-http-server --service-name
    service_name` with `depends`, where the API depends on the services `dependencies`."""
    known = set(dependencies)
    unknown = sorted(set(depends) - known)
    if unknown:
        raise RunnerAddressError(
            f"--depends names {', '.join(unknown)}, which {API_SERVICE} does not depend on "
            f"(it depends on {', '.join(sorted(known))}); refusing to start rather than "
            f"build {RUNNER_SERVICE} inside the API process"
        )
    if service_name == API_SERVICE and RUNNER_SERVICE not in depends:
        raise RunnerAddressError(
            f"{API_SERVICE} served alone needs --depends {RUNNER_SERVICE}=<url> (or "
            f"BENTOML_SERVE_DEPENDS); without it BentoML would build the runner inside the "
            "API process"
        )
    for url in depends.values():
        check_url(url, resolve=resolve)


def check_start_command(dependencies: Iterable[str]) -> None:
    """Under `start-http-server`, the checks above on its own arguments; exits the process
    with one line on stderr when they fail. Elsewhere (`bentoml serve`, workers, tests that
    import the service) it does nothing."""
    import click

    context = click.get_current_context(silent=True)
    if context is None or context.info_name != START_COMMAND:
        return
    params = context.params
    service_name = params.get("service_name") or ""
    if service_name not in ("", API_SERVICE):
        return  # the runner tier: it depends on nothing
    try:
        depends = parse_depends(params.get("depends") or ())
        check_depends(service_name, depends, dependencies)
    except RunnerAddressError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if RUNNER_SERVICE in depends:
        os.environ[TIER_MARKER] = depends[RUNNER_SERVICE]


def runner_is_remote() -> bool:
    """In a served worker: the runner is another tier, not a process of this server."""
    return bool(os.environ.get(TIER_MARKER))
