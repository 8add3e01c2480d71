"""The container setup, kept honest: compose.yaml is checked for what the service needs, and
its commands run here without containers: the one-shot migration, then two replicas of
`idp serve` on one PostgreSQL and one keystore directory.

No Docker engine runs on the test machines; `docker compose config` validates the file where
the client has the compose plugin, and is skipped otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.live import LiveServer, database_named, execute_sync, replicas

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
REPLICAS = ("idp-1", "idp-2")
KEYS_MOUNT = "/var/lib/idp/keys"
ADMIN_PASSWORD = "compose admin passphrase"


def test_compose_runs_postgres_migration_two_replicas_proxy_and_orders() -> None:
    assert set(SERVICES) == {"postgres", "migrate", *REPLICAS, "proxy", "orders"}
    migrate = SERVICES["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    for name in REPLICAS:
        replica = SERVICES[name]
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["command"] == SERVICES["idp-1"]["command"]
        assert replica["environment"] == SERVICES["idp-1"]["environment"]
        assert replica["volumes"] == [f"keys:{KEYS_MOUNT}"]  # one keystore for both
        assert replica["environment"]["IDP_KEYS_DIR"] == KEYS_MOUNT
        assert _seconds(replica["stop_grace_period"]) > 30  # idp's graceful shutdown window
    assert migrate["volumes"] == [f"keys:{KEYS_MOUNT}"]
    proxy = SERVICES["proxy"]
    assert {v.split(":")[0] for v in proxy["volumes"]} == {"./deploy/haproxy.cfg"}
    assert all(proxy["depends_on"][r]["condition"] == "service_healthy" for r in REPLICAS)
    assert "keys" in COMPOSE["volumes"]


def test_replicas_trust_forwarded_headers_from_the_proxy_only() -> None:
    proxy_address = SERVICES["proxy"]["networks"]["default"]["ipv4_address"]
    subnet = COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    for name in REPLICAS:
        environment = SERVICES[name]["environment"]
        assert "FORWARDED_ALLOW_IPS" not in environment
        assert environment["IDP_FORWARDED_ALLOW_IPS"] == proxy_address


def _seconds(duration: str) -> int:
    assert duration.endswith("s")
    return int(duration[:-1])


def test_proxy_config_balances_both_replicas_and_hides_metrics() -> None:
    config = (ROOT / "deploy" / "haproxy.cfg").read_text()
    for replica in REPLICAS:
        assert f"server {replica} {replica}:8000" in config
    assert "uri /readyz" in config
    assert "retry-on conn-failure" in config
    assert "http-request deny deny_status 404 if metrics_path" in config
    # The client's own forwarding headers are replaced, never appended to.
    assert "http-request set-header X-Forwarded-For %[src]" in config
    assert "http-request del-header Forwarded" in config
    assert "option forwardfor" not in config
    haproxy = shutil.which("haproxy")
    if haproxy:
        checked = subprocess.run(
            [haproxy, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dockerfile_runs_idp_as_a_user_with_the_keystore_on_a_volume() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    final = lines[stages[-1] :]
    assert final[0].startswith("FROM python:") and "slim" in final[0]
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    assert user not in {"root", "0"}
    assert f'VOLUME ["{KEYS_MOUNT}"]' in final
    assert f"IDP_KEYS_DIR={KEYS_MOUNT}" in " ".join(final)
    assert final[-1] == 'CMD ["idp", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert SERVICES["idp-1"]["command"] == ["idp", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(line.startswith("FROM ") and " AS orders" in line for line in lines)


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no docker compose client on this machine")
    result = subprocess.run(
        [*client, "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTGRES_PASSWORD": "test"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [*client, "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"},
        check=False,
    )
    assert missing.returncode != 0  # no default database password


# The same commands, without containers ----------------------------------------------------


@pytest.fixture
def empty_database(database_url: str, admin_url: str) -> Iterator[str]:
    """A database with no schema at all, as PostgreSQL's container creates it."""
    name = f"idp_compose_{uuid.uuid4().hex[:10]}"
    execute_sync(admin_url, f'CREATE DATABASE "{name}"')
    yield database_named(database_url, name)
    execute_sync(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _compose_env(service: str, database_url: str, keys_dir: Path, issuer: str) -> dict[str, str]:
    """The service's environment from compose.yaml, with this machine's database, keystore
    and URL in place of the containers'."""
    env = {k: str(v) for k, v in SERVICES[service]["environment"].items()}
    env.update(IDP_DATABASE_URL=database_url, IDP_KEYS_DIR=str(keys_dir), IDP_ISSUER=issuer)
    for key, value in env.items():
        if value.startswith("${") and ":-" in value:  # ${NAME:-default}
            env[key] = value[value.index(":-") + 2 : -1]
    return env


def _kids(server: LiveServer) -> tuple[bytes, str]:
    response = httpx.get(f"{server.url}/.well-known/jwks.json")
    return response.content, response.headers["etag"]


def _signing_kid(server: LiveServer) -> str:
    response = httpx.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 200, response.text
    kid: str = jwt.get_unverified_header(response.json()["access_token"])["kid"]
    return kid


def _active_kid_metric(server: LiveServer) -> str:
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == "idp_signing_key_info":
                return sample.labels["kid"]
    raise AssertionError("no idp_signing_key_info")


@pytest.mark.slow
def test_compose_commands_migrate_then_two_replicas_share_keys_and_see_a_rotation(
    empty_database: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    issuer = "http://127.0.0.1:8080"  # the proxy's URL, the same for both replicas
    migrate_env = _compose_env("migrate", empty_database, keys, issuer)
    assert migrate_env["IDP_BOOTSTRAP_ADMIN_PASSWORD"] == ""  # compose's default: no admin
    migrate_command = SERVICES["migrate"]["command"]
    bin_dir = str(Path(sys.executable).parent)
    shell_env = {**os.environ, **migrate_env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    migrated = subprocess.run(
        migrate_command,
        env={**shell_env, "IDP_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    again = subprocess.run(  # a second `up` runs it again: nothing changes, no error
        migrate_command, env=shell_env, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert again.returncode == 0, again.stdout + again.stderr

    serve = SERVICES["idp-1"]["command"]
    assert serve[:2] == ["idp", "serve"], shlex.join(serve)
    replica_env = _compose_env("idp-1", empty_database, keys, issuer)
    replica_env["IDP_KEYS_RELOAD_INTERVAL"] = "1"
    # No --init-keys: the replicas use the keystore the migrate step created on the volume.
    with replicas(empty_database, tmp_path, keys_dir=keys, env=replica_env, init_keys=False) as (
        a,
        b,
    ):
        assert _kids(a) == _kids(b)  # byte-identical JWKS, same ETag
        token = httpx.post(
            f"{a.url}/token",
            data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
        ).json()["access_token"]
        me = httpx.get(f"{b.url}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200  # signed by one replica, accepted by the other
        before = _signing_kid(a)
        assert _signing_kid(b) == before

        rotated = a.idp("keys", "rotate", "--force")
        assert rotated.returncode == 0, rotated.stderr
        started = time.monotonic()
        while {_signing_kid(a), _signing_kid(b)} == {before} or _kids(a) != _kids(b):
            assert time.monotonic() - started < 1 + 4, "replicas did not converge in time"
            time.sleep(0.1)
        after = _signing_kid(a)
        assert after != before
        assert _signing_kid(b) == after
        # Both replicas publish the retired key, so the old token still verifies on either.
        for server in (a, b):
            assert (
                httpx.get(
                    f"{server.url}/me", headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 200
            )
            assert _active_kid_metric(server) == after
        logs = a.log() + b.log()
    for line in logs.splitlines():
        assert line.startswith("{"), line  # IDP_LOG_FORMAT=json from compose.yaml
    assert ADMIN_PASSWORD not in logs
