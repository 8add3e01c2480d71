"""Real server processes for end-to-end tests: `idp serve` under uvicorn on a free port, and
the `idp` command run in this process (`invoke_idp`) or as a real one (`run_idp`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def execute(url: str, sql: str) -> None:
    """Run one statement through asyncpg on the database of `url`."""
    target = make_url(url)
    conn = await asyncpg.connect(
        host=target.host,
        port=target.port,
        user=target.username,
        password=target.password,
        database=target.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def execute_sync(url: str, sql: str) -> None:
    """`execute` from synchronous code, in its own thread so no running loop is disturbed."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, execute(url, sql)).result()


def create_database_if_missing(url: str) -> None:
    """CREATE DATABASE for the database of `url`, connecting to `postgres` on its server."""
    name = make_url(url).database

    async def create() -> None:
        target = make_url(url)
        conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            password=target.password,
            database="postgres",
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()


def database_named(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def run_idp(
    *args: str,
    env: Mapping[str, str],
    stdin: str = "",
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the `idp` command as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "idp", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


# Loggers that `idp db ...` reconfigures from alembic.ini (migrations/env.py, fileConfig).
_CLI_LOGGERS = ("", "alembic", "sqlalchemy")


def register_client(env: Mapping[str, str], client_id: str, **fields: Any) -> str | None:
    """Register a client through the service layer in the database and keystore `env` names
    (in a thread of its own, like `invoke_idp`); its secret, for a secret-authenticated one."""
    from datetime import UTC, datetime

    from idp.configuration.database import Database
    from idp.configuration.settings import Settings
    from idp.schemas.clients import ClientCreate
    from idp.services import clients
    from idp.services.permissions import SYSTEM

    settings = Settings(
        database_url=env["IDP_DATABASE_URL"],
        keys_dir=Path(env["IDP_KEYS_DIR"]),
        issuer=env["IDP_ISSUER"],
        audience=[env["IDP_AUDIENCE"]],
        client_secret_pepper=env.get("IDP_CLIENT_SECRET_PEPPER"),
    )

    async def create() -> str | None:
        database = Database(settings)
        try:
            async with database.session() as session:
                _client, secret = await clients.create_client(
                    session,
                    settings,
                    ClientCreate(client_id=client_id, **fields),
                    actor=SYSTEM,
                    pepper=clients.pepper_for(settings),
                    now=datetime.now(UTC),
                )
        finally:
            await database.dispose()
        return secret

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


def invoke_idp(
    *args: str, env: Mapping[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `idp args` inside this process with typer's CliRunner, as `run_idp` would run it.

    In a thread of its own: commands call asyncio.run, which refuses to start while a test's
    event loop runs in this thread. Settings are read afresh from `env` (get_settings is cached
    per process) and the logging that Alembic configures is put back afterwards. An unexpected
    exception shows as a traceback on stderr, as it would from the real command.
    """
    from typer.testing import CliRunner

    from idp.cli import app
    from idp.configuration.settings import get_settings

    def call() -> subprocess.CompletedProcess[str]:
        loggers = [logging.getLogger(name) for name in _CLI_LOGGERS]
        saved = [(lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(app, list(args), input=stdin, env=dict(env))
        finally:
            get_settings.cache_clear()
            for lg, (level, handlers, propagate, disabled) in zip(loggers, saved, strict=True):
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.propagate, lg.disabled = propagate, disabled
        stderr = result.stderr
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(*result.exc_info))
        return subprocess.CompletedProcess(["idp", *args], result.exit_code, result.stdout, stderr)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@dataclass
class LiveServer:
    url: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def idp(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """The `idp` command on this server's database and keys, run in-process."""
        return invoke_idp(*args, env=self.env, stdin=stdin)

    def register_client(self, client_id: str, **fields: Any) -> str | None:
        """Register a client in this server's database, with its pepper; its secret."""
        return register_client(self.env, client_id, **fields)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def server_env(database_url: str, keys_dir: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "IDP_DATABASE_URL": database_url,
        "IDP_KEYS_DIR": str(keys_dir),
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_AUDIENCE": "api.test",
        "IDP_BCRYPT_ROUNDS": "4",
        "IDP_JWKS_MAX_AGE": "2",
        "IDP_KEYS_RELOAD_INTERVAL": "0.5",
        "IDP_TOKEN_RATE_LIMIT": "0",
        "IDP_LOG_LEVEL": "INFO",
        **extra,
    }


@contextmanager
def live_server(
    database_url: str,
    workdir: Path,
    *,
    keys_dir: Path | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30,
    workers: int = 1,
    ready_path: str = "/readyz",
    args: Sequence[str] = (),
    init_keys: bool = True,
) -> Iterator[LiveServer]:
    """Start `idp serve [args]` and wait until `ready_path` answers 200 (/healthz for a server
    whose database is down on purpose); stop it with SIGTERM afterwards. With `init_keys` the
    server creates its keystore if there is none, like the development command."""
    port = port or free_port()
    keys_dir = keys_dir or workdir / "keys"
    full_env = server_env(database_url, keys_dir, port, **(env or {}))
    log_path = workdir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idp",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                *(["--init-keys"] if init_keys else []),
                *args,
            ],
            env={**os.environ, **full_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", port, full_env, process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"idp serve exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"idp serve not ready in {ready_timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if server.stop(signal.SIGTERM) is None:
            os.kill(process.pid, signal.SIGKILL)


@contextmanager
def replicas(
    database_url: str,
    workdir: Path,
    *,
    count: int = 2,
    keys_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    init_keys: bool = True,
) -> Iterator[list[LiveServer]]:
    """`count` replicas of `idp serve` on one database and one keystore directory, with one
    issuer, as behind a proxy: a token from any of them is valid on all of them."""
    shared = {"IDP_ISSUER": "http://127.0.0.1:8080", **(env or {})}
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                live_server(
                    database_url,
                    workdir,
                    keys_dir=keys_dir or workdir / "keys",
                    env=shared,
                    init_keys=init_keys,
                )
            )
            for _ in range(count)
        ]
