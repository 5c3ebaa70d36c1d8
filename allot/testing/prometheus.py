"""A local Prometheus server scraping allot's nodes, for end-to-end tests and ``make run``
(``ALLOT_PROMETHEUS=1``): Debian's ``prometheus`` package, started with a configuration written
here and allot's alerting rules (``ops/prometheus/allot-rules.yml``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from allot.errors import ServiceError
from allot.testing.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "allot-rules.yml"


def write_config(
    path: Path, targets: list[str], interval: float, rules: Path | None = RULES
) -> Path:
    """Write a Prometheus configuration scraping ``targets`` (``host:port``) every
    ``interval`` seconds, evaluating ``rules``; returns ``path``."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"},
        "scrape_configs": [{"job_name": "allot", "static_configs": [{"targets": targets}]}],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def start_prometheus(
    workdir: Path,
    targets: list[str],
    *,
    interval: float = 1.0,
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
) -> ServerProcess:
    """Start ``prometheus`` scraping ``targets`` and wait until it is ready.

    Raises:
        ServiceError: ``prometheus`` is missing or did not come up.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise ServiceError(
            "prometheus is not installed: install it with `apt-get install -y prometheus` "
            "(make test does this as root)"
        )
    port = port or free_port(host)
    config = write_config(workdir / "prometheus.yml", targets, interval)
    log_path = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={host}:{port}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess("Prometheus", host, port, process, workdir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"prometheus exited on start:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{server.address}/-/ready", timeout=1):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    server.stop()
    raise ServiceError(f"prometheus did not get ready within {timeout:.0f} s:\n{server.log_tail()}")


def query(address: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query to the Prometheus at ``host:port``, [] when it
    does not answer."""
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return []
    result: list[dict[str, Any]] = payload.get("data", {}).get("result", [])
    return result


def by_label(address: str, promql: str, label: str) -> dict[str, float]:
    """An instant query's values keyed by ``label``."""
    samples = query(address, promql)
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in samples}
