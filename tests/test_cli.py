"""The `idp` command as an operator runs it, on a real database: in this process with typer's
runner, and (marked slow) as a real process, so the console entry point stays covered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, update

from idp.configuration.migrations import schema_head
from idp.models import LoginFailure, User
from tests.live import invoke_idp, run_idp

ROOT = Path(__file__).resolve().parent.parent


def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_BCRYPT_ROUNDS": "4",
    }


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run `idp ...` in-process against a fresh SQLite file migrated with `idp db upgrade`."""
    env = _cli_env(tmp_path)

    def _run(
        *args: str, stdin: str = "", extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return invoke_idp(*args, env={**env, **(extra_env or {})}, stdin=stdin)

    assert _run("db", "upgrade").returncode == 0
    return _run


@pytest.fixture
def run_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run `idp ...` as a real process (`python -m idp`), on the same kind of database."""
    env = _cli_env(tmp_path)

    def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return run_idp(*args, env=env, stdin=stdin, cwd=tmp_path)

    assert _run("db", "upgrade").returncode == 0
    return _run


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_help_lists_subcommands(run_process) -> None:  # type: ignore[no-untyped-def]
    result = run_process("--help")
    assert result.returncode == 0
    for name in ("serve", "db", "users", "roles", "keys"):
        assert name in result.stdout


def test_users_and_roles_lifecycle(run) -> None:  # type: ignore[no-untyped-def]
    created = run(
        "users", "create", "alice", "--email", "alice@example.com", stdin="a long passphrase\n"
    )
    assert created.returncode == 0, created.stderr
    assert "a long passphrase" not in created.stdout + created.stderr
    assert run("roles", "create", "support", "--permission", "users:read").returncode == 0
    assert run("roles", "grant", "alice", "support").returncode == 0
    listed = run("users", "list")
    assert "alice" in listed.stdout and "support" in listed.stdout
    assert "users:read" in run("roles", "list").stdout
    assert run("roles", "revoke", "alice", "support").returncode == 0
    assert run("users", "set-password", "ALICE", stdin="another long one\n").returncode == 0
    assert run("users", "disable", "alice").returncode == 0
    assert _usernames(run("users", "list", "--json", "--disabled")) == ["alice"]


def test_operator_mistakes_print_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert (
        run(
            "users", "create", "bob", "--email", "bob@example.com", stdin="a long passphrase\n"
        ).returncode
        == 0
    )
    assert "already exists" in _one_line_error(
        run("users", "create", "BOB", "--email", "b2@example.com", stdin="a long passphrase\n")
    )
    assert "unknown role" in _one_line_error(
        run(
            "users",
            "create",
            "carl",
            "--email",
            "c@example.com",
            "--role",
            "ghost",
            stdin="a long passphrase\n",
        )
    )
    assert "72 bytes" in _one_line_error(
        run("users", "create", "dora", "--email", "d@example.com", stdin="x" * 80 + "\n")
    )
    assert "not found" in _one_line_error(run("roles", "grant", "nobody", "admin"))
    assert "email" in _one_line_error(
        run("users", "create", "eve", "--email", "not-an-email", stdin="a long passphrase\n")
    )
    unreachable = run(
        "users",
        "list",
        extra_env={
            "IDP_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:9/none",
            "IDP_DB_CONNECT_TIMEOUT": "1",
        },
    )
    assert "database unreachable" in _one_line_error(unreachable)
    assert "IDP_BCRYPT_ROUNDS" in _one_line_error(
        run("users", "list", extra_env={"IDP_BCRYPT_ROUNDS": "2"})
    )


def test_ensure_admin_generates_once(run) -> None:  # type: ignore[no-untyped-def]
    first = run("users", "ensure-admin", "--generate")
    assert first.returncode == 0 and "shown only this once" in first.stderr
    second = run("users", "ensure-admin", "--generate")
    assert second.returncode == 0 and "exists already" in second.stdout
    from_env = run(
        "users",
        "ensure-admin",
        extra_env={
            "IDP_BOOTSTRAP_ADMIN_USERNAME": "x",
            "IDP_BOOTSTRAP_ADMIN_PASSWORD": "whatever12",
        },
    )
    assert "exists already" in from_env.stdout


@pytest.mark.slow
def test_db_current_and_downgrade(run_process) -> None:  # type: ignore[no-untyped-def]
    """A real process: Alembic prints `db current` to the sys.stdout it saw at import."""
    assert "(head)" in run_process("db", "current").stdout
    assert run_process("db", "downgrade", "base").returncode == 0
    assert "(head)" not in run_process("db", "current").stdout
    assert run_process("db", "upgrade").returncode == 0


def _lock(tmp_path: Path, username: str, until: datetime, addresses: int) -> None:
    """Lock `username` account-wide until `until` and from `addresses` client addresses."""
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as connection:
        user_id = connection.scalar(select(User.id).where(User.username == username))
        connection.execute(update(User).where(User.id == user_id).values(locked_until=until))
        for n in range(addresses):
            connection.execute(
                insert(LoginFailure).values(
                    user_id=user_id, client_address=f"192.0.2.{n}", locked_until=until
                )
            )
    engine.dispose()


def _create(run, username: str, *roles: str) -> None:  # type: ignore[no-untyped-def]
    role_args = [arg for role in roles for arg in ("--role", role)]
    created = run(
        "users",
        "create",
        username,
        "--email",
        f"{username}@example.com",
        *role_args,
        stdin="a long passphrase\n",
    )
    assert created.returncode == 0, created.stderr


def _usernames(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [user["username"] for user in json.loads(result.stdout)]


def test_users_list_filters_and_shows_who_is_locked(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("roles", "create", "support").returncode == 0
    _create(run, "alice", "support")
    _create(run, "bob")
    _create(run, "carol")
    assert run("users", "disable", "carol").returncode == 0
    until = datetime.now(UTC) + timedelta(hours=1)
    _lock(tmp_path, "bob", until, addresses=2)

    assert _usernames(run("users", "list", "--json")) == ["alice", "bob", "carol"]
    assert _usernames(run("users", "list", "--json", "--role", "support")) == ["alice"]
    assert _usernames(run("users", "list", "--json", "--disabled")) == ["carol"]
    assert _usernames(run("users", "list", "--json", "--active")) == ["alice", "bob"]
    assert _usernames(run("users", "list", "--json", "--search", "OB@EXAMPLE")) == ["bob"]
    assert _usernames(run("users", "list", "--json", "--locked")) == ["bob"]

    (bob,) = json.loads(run("users", "list", "--json", "--locked").stdout)
    assert datetime.fromisoformat(bob["locked_until"]) == until.replace(microsecond=0) or abs(
        datetime.fromisoformat(bob["locked_until"]) - until
    ) < timedelta(seconds=1)
    assert bob["locked_addresses"] == 2 and bob["roles"] == [] and bob["active"] is True

    table = run("users", "list").stdout.splitlines()
    assert table[0].split() == ["username", "email", "active", "locked", "roles"]
    bob_row = next(line for line in table if line.startswith("bob "))
    assert f"until {until:%Y-%m-%d %H:%M}" in bob_row and "2 address(es)" in bob_row
    alice_row = next(line for line in table if line.startswith("alice "))
    assert alice_row.split()[-2:] == ["-", "support"]


def test_an_expired_lock_is_not_shown(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _create(run, "dave")
    _lock(tmp_path, "dave", datetime.now(UTC) - timedelta(minutes=1), addresses=1)
    assert _usernames(run("users", "list", "--json", "--locked")) == []
    (dave,) = json.loads(run("users", "list", "--json").stdout)
    assert dave["locked_until"] is None and dave["locked_addresses"] == 0


def test_listings_print_json_arrays(run) -> None:  # type: ignore[no-untyped-def]
    assert run("roles", "create", "support", "--permission", "users:read").returncode == 0
    roles = json.loads(run("roles", "list", "--json").stdout)
    assert {"name": "support", "description": "", "permissions": ["users:read"]} in roles
    assert run("keys", "init").returncode == 0
    keys = json.loads(run("keys", "list", "--json").stdout)
    assert sorted(key["state"] for key in keys) == ["active", "next"]
    assert set(keys[0]) == {
        "kid",
        "alg",
        "state",
        "bits",
        "created_at",
        "activated_at",
        "retired_at",
        "removable_after",
    }
    assert json.loads(run("users", "list", "--json").stdout) == []


def test_users_delete_asks_unless_yes_and_keeps_the_last_admin(run) -> None:  # type: ignore[no-untyped-def]
    _create(run, "erin")
    kept = run("users", "delete", "erin", stdin="n\n")
    assert kept.returncode == 1 and "cancelled" in kept.stderr
    assert _usernames(run("users", "list", "--json")) == ["erin"]
    deleted = run("users", "delete", "erin", stdin="y\n")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted user erin" in deleted.stdout
    assert _usernames(run("users", "list", "--json")) == []
    assert "not found" in _one_line_error(run("users", "delete", "erin", "--yes"))
    _create(run, "root", "admin")
    assert "admin" in _one_line_error(run("users", "delete", "root", "--yes"))


def test_roles_delete_needs_force_while_held(run) -> None:  # type: ignore[no-untyped-def]
    assert run("roles", "create", "support").returncode == 0
    _create(run, "frank", "support")
    assert "held by 1 user" in _one_line_error(run("roles", "delete", "support", "--yes"))
    forced = run("roles", "delete", "support", "--force", "--yes")
    assert forced.returncode == 0, forced.stderr
    assert "support" not in run("roles", "list").stdout
    ((frank,),) = [json.loads(run("users", "list", "--json").stdout)]
    assert frank["roles"] == []
    assert "cannot be deleted" in _one_line_error(run("roles", "delete", "admin", "--yes"))
    assert "not found" in _one_line_error(run("roles", "delete", "ghost", "--yes"))
    assert run("roles", "create", "temp").returncode == 0
    assert run("roles", "delete", "temp", stdin="n\n").returncode == 1
    assert run("roles", "delete", "temp", stdin="y\n").returncode == 0


def test_db_upgrade_reports_each_revision_on_stderr(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    upgraded = invoke_idp("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    applied = [line for line in upgraded.stderr.splitlines() if line.startswith("applied ")]
    assert len(applied) == len(schema_head().known)
    assert applied[-1].startswith(f"applied {schema_head().head}: ")
    assert upgraded.stdout == ""
    again = invoke_idp("db", "upgrade", env=env)
    assert "applied" not in again.stderr and "up to date" in again.stderr
    down = invoke_idp("db", "downgrade", "base", env=env)
    reverted = [line for line in down.stderr.splitlines() if line.startswith("reverted ")]
    assert len(reverted) == len(schema_head().known)


def test_key_generation_and_purge_report_progress(run) -> None:  # type: ignore[no-untyped-def]
    init = run("keys", "init", "--rsa-bits", "3072")
    assert init.returncode == 0, init.stderr
    lines = init.stderr.splitlines()
    assert lines[0] == "generating RSA-3072 key (active)…"
    assert lines[1].startswith("done in ") and lines[1].endswith(" s")
    assert lines[2] == "generating RSA-3072 key (next)…"
    assert "generating" not in init.stdout  # stdout stays the table
    rotated = run("keys", "rotate", "--force", "--alg", "ES256")
    assert "generating ES256 key (next)…" in rotated.stderr
    assert "generating" not in run("keys", "list").stderr
    purged = run("tokens", "purge")
    assert purged.returncode == 0, purged.stderr
    assert purged.stderr.startswith("==> purging sessions that ended before ")
    assert "done in " in purged.stderr
    assert purged.stdout.strip() == (
        "purged 0 ended session(s) and 0 refresh token(s); 0 used client assertion(s)"
    )


def test_ensure_admin_generate_treats_an_empty_password_as_unset(run) -> None:  # type: ignore[no-untyped-def]
    """Compose passes IDP_BOOTSTRAP_ADMIN_PASSWORD empty when the operator set none."""
    env = {"IDP_BOOTSTRAP_ADMIN_USERNAME": "boss", "IDP_BOOTSTRAP_ADMIN_PASSWORD": ""}
    assert "nothing to do" in run("users", "ensure-admin", extra_env=env).stdout
    first = run("users", "ensure-admin", "--generate", extra_env=env)
    assert first.returncode == 0, first.stderr
    assert "'boss'" in first.stderr and "shown only this once" in first.stderr
    assert _usernames(run("users", "list", "--json", "--role", "admin")) == ["boss"]
    second = run("users", "ensure-admin", "--generate", extra_env=env)
    assert "exists already" in second.stdout and "shown only" not in second.stderr


def _stub(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n{script}\n")
    path.chmod(0o755)


@pytest.fixture
def scripts_copy(tmp_path: Path) -> Path:
    """scripts/ in a directory of its own, with a stand-in uv (and `idp`) that log their calls:
    the first-run set-up runs for real, the slow parts are stubbed."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    (tmp_path / "uv.lock").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    version = re.search(r"UV_VERSION=(\S+)", (ROOT / "scripts" / "env.sh").read_text())
    assert version
    _stub(
        tmp_path / ".tools" / "bin" / "uv",
        f'[ "$1" = --version ] && {{ echo "uv {version.group(1)}"; exit; }}\n'
        'mkdir -p .venv/bin && echo "uv $*" >&2',
    )
    _stub(tmp_path / ".venv" / "bin" / "idp", 'echo "idp $*" >&2')
    return tmp_path


def _steps(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith(("==>", "uv ", "idp "))]


def test_env_script_announces_creating_and_syncing_the_venv(scripts_copy: Path) -> None:
    def source() -> list[str]:
        return _steps(
            subprocess.run(
                ["bash", "-c", f"source {scripts_copy / 'scripts' / 'env.sh'}"],
                capture_output=True,
                text=True,
                check=False,
            )
        )

    first = source()
    assert first[0].startswith("==> creating .venv from uv.lock")
    assert first[1].startswith("uv sync")
    _stub(scripts_copy / ".venv" / "bin" / "python", "")
    assert [line for line in source() if line.startswith("==>")] == []  # nothing changed
    os.utime(scripts_copy / "uv.lock", (time.time() + 5, time.time() + 5))
    assert source()[0] == "==> syncing .venv with uv.lock"


def test_serve_script_announces_each_step(scripts_copy: Path) -> None:
    _stub(scripts_copy / ".venv" / "bin" / "python", "")
    (scripts_copy / ".venv" / ".synced").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    result = subprocess.run(
        [str(scripts_copy / "scripts" / "serve")],
        capture_output=True,
        text=True,
        env={**env, "IDP_PORT": "8123"},
        check=False,
    )
    steps = [step for step in _steps(result) if not step.startswith("uv sync")]
    assert steps == [
        "idp db upgrade",
        "==> making sure an admin account exists",
        "idp users ensure-admin --generate",
        "==> serving on http://127.0.0.1:8123 (keys in keys/, created on the first run)",
        "idp serve --init-keys --host 127.0.0.1 --port 8123",
    ]
