"""What every benchmark shares: timing helpers, the result table, servers to measure."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.live import LiveServer, execute_sync, live_server, run_idp

PASSWORD = "bench passphrase long enough"


@dataclass
class Row:
    """One line of the table: a ratio, its target, and whether it meets it."""

    name: str
    ratio: float
    target: str
    meets: bool | None
    detail: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, ratio: float, target: str, meets: bool | None, detail: str) -> None:
        row = Row(name, ratio, target, meets, detail)
        self.rows.append(row)
        verdict = {True: "meets", False: "MISSES", None: "-"}[meets]
        print(f"  {name}: {ratio:.2f}x (target {target}) {verdict} — {detail}", flush=True)


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; --quick shrinks everything for the smoke test."""

    tokens: int = 3000
    zipf_requests: int = 30_000
    zipf_users: int = 1000
    login_samples: int = 30
    saturation_seconds: float = 10
    wrk_seconds: int = 8
    refresh_seconds: float = 10
    admin_users: int = 100
    bcrypt_rounds: int = 12

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            tokens=50,
            zipf_requests=500,
            zipf_users=50,
            login_samples=3,
            saturation_seconds=1,
            wrk_seconds=1,
            refresh_seconds=1,
            admin_users=12,
            bcrypt_rounds=4,
        )


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(function: Callable[[], object], repeat: int) -> float:
    """Seconds for `repeat` calls of `function`."""
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return time.perf_counter() - start


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def database_url() -> str:
    url = os.environ.get("IDP_BENCH_DATABASE_URL")
    if not url:
        raise SystemExit("IDP_BENCH_DATABASE_URL is not set: run bench/run")
    from idp.configuration.settings import Settings

    return Settings(database_url=url).database_url


@contextmanager
def bench_server(
    workdir: Path, *, rounds: int, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[LiveServer]:
    """A migrated database and a real `idp serve` with one user `bench` (and the admin role)."""
    from sqlalchemy.engine import make_url

    workdir.mkdir(parents=True, exist_ok=True)
    base = database_url()
    admin = make_url(base).set(database="postgres").render_as_string(hide_password=False)
    name = f"idp_bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    execute_sync(admin, f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    server_env = {
        "IDP_BCRYPT_ROUNDS": str(rounds),
        "IDP_LOG_LEVEL": "WARNING",
        "IDP_JWKS_MAX_AGE": "300",
        **(env or {}),
    }
    try:
        migrated = run_idp("db", "upgrade", env={"IDP_DATABASE_URL": url})
        if migrated.returncode != 0:
            raise RuntimeError(migrated.stderr)
        with live_server(url, workdir, env=server_env, workers=workers) as server:
            created = server.idp(
                "users",
                "create",
                "bench",
                "--email",
                "bench@example.com",
                "--role",
                "admin",
                stdin=PASSWORD + "\n",
            )
            if created.returncode != 0:
                raise RuntimeError(created.stderr)
            yield server
    finally:
        execute_sync(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def login(client: httpx.AsyncClient, username: str = "bench") -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": "password", "username": username, "password": PASSWORD}
    )


async def run_for(
    seconds: float, concurrency: int, job: Callable[[], Awaitable[bool]]
) -> tuple[int, int, float]:
    """Run `job` in `concurrency` loops for `seconds`; (successes, failures, elapsed)."""
    deadline = time.perf_counter() + seconds
    ok = failed = 0

    async def loop() -> None:
        nonlocal ok, failed
        while time.perf_counter() < deadline:
            if await job():
                ok += 1
            else:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return ok, failed, time.perf_counter() - start


def wrk(url: str, seconds: int, connections: int = 32, threads: int = 1) -> float | None:
    """Requests per second that wrk measures, or None without wrk."""
    try:
        output = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    for line in output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def wrk_script(
    url: str, lua: str, *, seconds: float, threads: int, connections: int
) -> tuple[float, int] | None:
    """Run wrk with the Lua script `lua` against `url`: (requests/s, non-2xx answers), or
    None without wrk."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        output = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout  # fmt: skip
    except FileNotFoundError:
        return None
    finally:
        Path(script.name).unlink()
    rps = next(
        float(line.split()[1]) for line in output.splitlines() if line.startswith("Requests/sec:")
    )
    non_2xx = next((int(line.split()[-1]) for line in output.splitlines() if "Non-2xx" in line), 0)
    return rps, non_2xx


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
