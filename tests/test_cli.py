"""The `idp` command as an operator runs it, on a real database: in this process with typer's
runner, and (marked slow) as a real process, so the console entry point stays covered."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
    assert "False" in run("users", "list").stdout


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
