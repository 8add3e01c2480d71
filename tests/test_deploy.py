"""The container setup, kept honest: compose.yaml is checked for what the service needs, and
its commands run here without containers: the one-shot migration, then two replicas of
`idp serve` on one PostgreSQL and one keystore directory.

No Docker engine runs on the test machines; `docker compose config` validates the file where
the client has the compose plugin, and is skipped otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import re
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
from pydantic import ValidationError

from examples.orders_service.app import create_app as create_orders_app
from idp.configuration.settings import FILE_SETTINGS, Settings
from tests.live import LiveServer, database_named, execute_sync, invoke_idp, replicas

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


def _probe_url(service: str) -> str:
    """The URL a service's healthcheck fetches (python urllib or busybox wget)."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    match = re.search(r"http://127\.0\.0\.1:\d+/[a-z]+", " ".join(test[1:]))
    assert match, test
    return match.group(0)


def test_every_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    # The migration is a job that exits: the image's server healthcheck is switched off.
    assert SERVICES["migrate"]["healthcheck"] == {"disable": True}
    assert SERVICES["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "curl" not in dockerfile.replace("# ", "")  # hence python's urllib in the probes
    for replica in REPLICAS:
        assert SERVICES[replica]["healthcheck"]["test"][1:3] == ["python", "-c"]
        assert _probe_url(replica) == "http://127.0.0.1:8000/readyz"
    # The proxy is healthy while it routes to a ready replica, on the port it binds.
    assert "bind :8080" in (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert _probe_url("proxy") == "http://127.0.0.1:8080/readyz"
    orders_url = _probe_url("orders")
    assert orders_url.startswith(
        f"http://127.0.0.1:{SERVICES['orders']['environment']['ORDERS_PORT']}/"
    )
    orders_paths = {getattr(route, "path", None) for route in create_orders_app().routes}
    assert "/" + orders_url.rsplit("/", 1)[1] in orders_paths
    assert SERVICES["orders"]["depends_on"]["proxy"]["condition"] == "service_healthy"
    for service in SERVICES.values():
        for key in ("interval", "timeout", "start_period"):
            if key in service["healthcheck"]:
                _seconds(service["healthcheck"][key])


def test_secrets_are_files_under_run_secrets() -> None:
    postgres = SERVICES["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert COMPOSE["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/"), (name, key)
                assert secret in service["secrets"] and secret in COMPOSE["secrets"], (name, key)
    # The idp variables compose.yaml and docs/operations.md describe are the ones Settings reads.
    operations = (ROOT / "docs" / "operations.md").read_text()
    for field in FILE_SETTINGS:
        assert f"`IDP_{field.upper()}_FILE`" in operations


def test_migrate_generates_and_shows_the_first_admin_password_once(tmp_path: Path) -> None:
    """compose.yaml's migrate command, step by step in this process, with compose's default of
    no IDP_BOOTSTRAP_ADMIN_PASSWORD: the password is generated and printed, once."""
    env = _compose_env(
        "migrate", f"sqlite+aiosqlite:///{tmp_path / 'idp.db'}", tmp_path / "keys", "http://x"
    )
    env["IDP_BCRYPT_ROUNDS"] = "4"
    assert env["IDP_BOOTSTRAP_ADMIN_PASSWORD"] == ""
    command = SERVICES["migrate"]["command"]
    assert command[:2] == ["sh", "-c"]
    steps = [shlex.split(step) for step in command[2].split(" && ")]
    assert ["idp", "users", "ensure-admin", "--generate"] in steps
    outputs = []
    for _ in range(2):  # a second `docker compose up` runs it again
        for step in steps:
            assert step[0] == "idp"
            result = invoke_idp(*step[1:], env=env)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
    first, second = "".join(outputs[: len(steps)]), "".join(outputs[len(steps) :])
    assert first.count("shown only this once") == 1
    assert f"{'=' * 72}\nCreated admin account 'admin' with password:\n\n    " in first
    assert "shown only this once" not in second and "exists already" in second


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in FILE_SETTINGS:
        monkeypatch.delenv(f"IDP_{name.upper()}", raising=False)
        monkeypatch.delenv(f"IDP_{name.upper()}_FILE", raising=False)
    return monkeypatch


def test_settings_read_file_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = tmp_path / "database_url"
    url.write_text("postgresql+asyncpg://idp:s3cret@db/idp\n")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("two lines\n\n")  # one trailing newline is stripped, no more
    clean_env.setenv("IDP_DATABASE_URL_FILE", str(url))
    clean_env.setenv("IDP_KEYS_PASSPHRASE_FILE", str(passphrase))
    clean_env.setenv("IDP_BOOTSTRAP_ADMIN_PASSWORD_FILE", "")  # empty: unset
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "postgresql+asyncpg://idp:s3cret@db/idp"
    assert settings.keys_passphrase is not None
    assert settings.keys_passphrase.get_secret_value() == "two lines\n"
    assert settings.bootstrap_admin_password is None


def test_file_variables_refuse_both_and_unreadable_files(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from a file\n")
    clean_env.setenv("IDP_BOOTSTRAP_ADMIN_PASSWORD_FILE", str(secret))
    clean_env.setenv("IDP_BOOTSTRAP_ADMIN_PASSWORD", "from the environment")
    with pytest.raises(ValidationError, match="IDP_BOOTSTRAP_ADMIN_PASSWORD_FILE, not both"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    clean_env.delenv("IDP_BOOTSTRAP_ADMIN_PASSWORD")
    missing = tmp_path / "missing"
    clean_env.setenv("IDP_KEYS_PASSPHRASE_FILE", str(missing))
    with pytest.raises(ValidationError, match=f"IDP_KEYS_PASSPHRASE_FILE: cannot read {missing}"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    # The command says it in one line, before doing anything.
    result = invoke_idp(
        "keys",
        "list",
        env={"IDP_KEYS_PASSPHRASE_FILE": str(missing), "IDP_KEYS_DIR": str(tmp_path)},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: invalid settings: IDP_KEYS_PASSPHRASE_FILE: cannot read {missing}: "
        "No such file or directory"
    )


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
        for server in (a, b):  # compose's healthcheck, on this replica's port
            probe = [
                arg.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
                for arg in SERVICES["idp-1"]["healthcheck"]["test"][1:]
            ]
            assert probe[0] == "python"
            assert subprocess.run([sys.executable, *probe[1:]], timeout=30).returncode == 0
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
