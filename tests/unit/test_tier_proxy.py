"""The local stand-in for the runner's Kubernetes Service: a configuration real nginx accepts,
with one upstream server per replica on 127.0.0.1 and the stream module loaded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import ensure_debian_packages
from tools.front_proxy import ensure_nginx
from tools.tier_proxy import STREAM_PACKAGE, render


def test_the_rendered_stream_configuration_passes_nginx_t(tmp_path: Path) -> None:
    ensure_debian_packages("nginx-light", STREAM_PACKAGE)
    conf = render(43100, [43101, 43102], tmp_path)
    text = conf.read_text()
    assert text.count("server 127.0.0.1:4310") == 2
    assert "listen 127.0.0.1:43100;" in text
    checked = subprocess.run(
        [ensure_nginx(), "-t", "-q", "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    broken = conf.read_text().replace("proxy_pass iris_runner;", "proxy_pass nowhere")
    conf.write_text(broken)
    refused = subprocess.run(
        [ensure_nginx(), "-t", "-q", "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0  # the check really checks
