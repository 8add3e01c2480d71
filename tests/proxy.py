"""HAProxy from the shipped deploy/haproxy.cfg in front of live `idp serve` processes.

The configuration is the deployment's own, with only what names the container network
changed: the listening address, the replicas' addresses, the Docker DNS resolver.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "haproxy.cfg"


def haproxy_binary() -> str:
    """The `haproxy` executable, or skip: scripts/test installs Debian's package as root."""
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if binary is None:
        pytest.skip("haproxy is not installed (scripts/test installs it with apt-get as root)")
    return binary


def local_config(listen_port: int, backend_ports: list[int]) -> str:
    """deploy/haproxy.cfg listening on 127.0.0.1:`listen_port`, balancing the given ports."""
    config = CONFIG.read_text()
    config = re.sub(r"(?m)^    bind :8080$", f"    bind 127.0.0.1:{listen_port}", config)
    config = re.sub(r"(?ms)^resolvers docker\n.*?\n\n", "", config)
    config = config.replace(" resolvers docker init-addr last,libc,none", "")
    servers = "\n".join(
        f"    server idp-{n} 127.0.0.1:{port}" for n, port in enumerate(backend_ports, 1)
    )
    config, count = re.subn(r"(?m)^    server idp-1 .*\n    server idp-2 .*$", servers, config)
    assert count == 1, "deploy/haproxy.cfg no longer names idp-1 and idp-2"
    return config


@contextmanager
def haproxy(workdir: Path, backend_ports: list[int]) -> Iterator[str]:
    """Run HAProxy in the foreground; yield its base URL once it accepts connections."""
    binary = haproxy_binary()
    port = free_port()
    config_path = workdir / f"haproxy-{port}.cfg"
    config_path.write_text(local_config(port, backend_ports))
    checked = subprocess.run(
        [binary, "-c", "-f", str(config_path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log_path = workdir / f"haproxy-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config_path)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
