"""`idp keys ...` and `idp serve`'s key handling, run in-process with typer's runner: no
keystore is created by mistake, sizes and algorithms survive a rotation, changes are audited."""

from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from idp.cli import app
from idp.configuration.settings import Settings, get_settings
from idp.main import create_app
from idp.repository.keystore import KeystoreMissingError

# joserfc flags the `EdDSA` name as deprecated by RFC 9864 once per process; it is our choice.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


class Idp:
    """`idp` with the environment of one test; settings are read afresh on every call."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._runner = CliRunner()

    def __call__(self, *args: str, **extra_env: str) -> Result:
        get_settings.cache_clear()
        try:
            return self._runner.invoke(app, list(args), env={**self.env, **extra_env})
        finally:
            get_settings.cache_clear()


@pytest.fixture
def idp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Idp:
    monkeypatch.chdir(tmp_path)  # no stray .env, and a default SQLite file would land here
    return Idp(
        {
            "IDP_KEYS_DIR": str(tmp_path / "keys"),
            "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'idp.db'}",
            "IDP_JWKS_MAX_AGE": "300",
        }
    )


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def table(result: Result) -> list[dict[str, str]]:
    """The rows of `idp keys list` (or of init/rotate, which print the same table)."""
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    names = header.split()
    return [dict(zip(names, row.split(), strict=False)) for row in rows]


# A wrong keys directory is never a new keystore


@pytest.mark.parametrize("existing_directory", [False, True])
@pytest.mark.parametrize(
    "command",
    [
        ("keys", "rotate"),
        ("keys", "rotate", "--force"),
        ("keys", "list"),
        ("keys", "prune"),
        ("keys", "revoke", "abc"),
        ("serve", "--port", "9"),
    ],
)
def test_without_a_keystore_commands_fail_naming_the_directory(
    idp: Idp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
    existing_directory: bool,
) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *_, **__: None)  # a server would start too late
    typo = tmp_path / "typo-keys"
    if existing_directory:  # e.g. an image's empty volume
        typo.mkdir()

    result = idp(*command, IDP_KEYS_DIR=str(typo))

    message = one_line_error(result)
    assert str(typo) in message
    assert "idp keys init" in message
    assert typo.exists() is existing_directory
    assert not existing_directory or list(typo.iterdir()) == []


async def test_a_server_started_without_the_cli_does_not_create_keys_either(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "typo-keys"
    server = create_app(
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'idp.db'}", keys_dir=keys)
    )

    with pytest.raises(KeystoreMissingError, match="typo-keys"):
        async with server.router.lifespan_context(server):
            pass

    assert not keys.exists()


def test_init_creates_the_keystore_and_then_the_other_commands_work(
    idp: Idp, tmp_path: Path
) -> None:
    created = table(idp("keys", "init", "--alg", "ES256"))

    assert [(r["alg"], r["state"], r["size"]) for r in created] == [
        ("ES256", "active", "256"),
        ("ES256", "next", "256"),
    ]
    assert (tmp_path / "keys" / "manifest.json").is_file()
    assert table(idp("keys", "list")) == created


def test_serve_with_init_keys_creates_the_keystore_and_keeps_an_existing_one(
    idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []
    monkeypatch.setattr("uvicorn.run", lambda target, **_: served.append(target))

    assert idp("db", "upgrade").exit_code == 0  # serve refuses a database behind head
    assert idp("serve", "--init-keys").exit_code == 0
    first = table(idp("keys", "list"))
    assert idp("serve").exit_code == 0
    assert idp("serve", "--init-keys").exit_code == 0

    assert table(idp("keys", "list")) == first
    assert [r["state"] for r in first] == ["active", "next"]
    assert served == ["idp.main:create_app"] * 3


# Rotation keeps the size and the algorithm unless told


def test_rotate_keeps_4096_bit_rsa_keys_unless_told(idp: Idp) -> None:
    table(idp("keys", "init", "--rsa-bits", "4096"))

    rotated = table(idp("keys", "rotate", "--force"))

    assert {(r["alg"], r["size"]) for r in rotated} == {("RS256", "4096")}
    resized = table(idp("keys", "rotate", "--force", "--rsa-bits", "3072"))
    upcoming = next(r for r in resized if r["state"] == "next")
    assert (upcoming["alg"], upcoming["size"]) == ("RS256", "3072")


def test_rotate_keeps_the_algorithm_unless_told(idp: Idp) -> None:
    table(idp("keys", "init", "--alg", "EdDSA"))

    rotated = table(idp("keys", "rotate", "--force"))

    assert {r["alg"] for r in rotated} == {"EdDSA"}
    changed = table(idp("keys", "rotate", "--force", "--alg", "ES256"))
    assert next(r for r in changed if r["state"] == "next")["alg"] == "ES256"


def test_help_says_what_a_plain_rotate_keeps(idp: Idp) -> None:
    shown = idp("keys", "rotate", "--help", COLUMNS="200").stdout
    text = " ".join(shown.replace("│", " ").split())

    assert "the current keys" in text
    assert "the current key" in text
    assert "RS256 (default)" not in text


# Audit log


def migrate(idp: Idp) -> Path:
    result = idp("db", "upgrade")
    assert result.exit_code == 0, result.output
    return Path(idp.env["IDP_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///"))


def audit_rows(database: Path) -> list[tuple[str, str, str, str, dict[str, object]]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT actor_username, action, target_type, target_id, details "
            "FROM audit_events WHERE action LIKE 'key.%' ORDER BY id"
        ).fetchall()
    return [(a, b, c, d, json.loads(e)) for a, b, c, d, e in rows]


def test_rotations_revocations_and_prunes_are_audited_as_the_os_user(
    idp: Idp, tmp_path: Path
) -> None:
    database = migrate(idp)
    first_active, first_next = (r["kid"] for r in table(idp("keys", "init", "--alg", "ES256")))
    assert audit_rows(database) == []

    rotated = table(idp("keys", "rotate", "--force"))
    new_next = next(r["kid"] for r in rotated if r["state"] == "next")
    manifest = tmp_path / "keys" / "manifest.json"
    document = json.loads(manifest.read_text())
    for key in document["keys"]:  # the retired key's last tokens have expired
        if key["state"] == "retired":
            key["removable_after"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    manifest.write_text(json.dumps(document))
    assert idp("keys", "prune").exit_code == 0
    assert idp("keys", "prune").stdout.strip() == "nothing to prune"  # nothing, no event
    assert idp("keys", "revoke", new_next).exit_code == 0

    actor = f"os:{getpass.getuser()}"
    assert audit_rows(database) == [
        (
            actor,
            "key.rotate",
            "key",
            first_next,
            {
                "alg": "ES256",
                "bits": 256,
                "retired": first_active,
                "next": new_next,
                "next_alg": "ES256",
                "next_bits": 256,
                "forced": True,
            },
        ),
        (actor, "key.prune", "key", first_active, {}),
        (actor, "key.revoke", "key", new_next, {"alg": "ES256", "bits": 256, "state": "next"}),
    ]


def test_a_refused_rotation_is_not_audited(idp: Idp) -> None:
    database = migrate(idp)
    table(idp("keys", "init", "--alg", "EdDSA"))

    assert "--force" in one_line_error(idp("keys", "rotate"))

    assert audit_rows(database) == []


def test_without_a_database_key_changes_work_and_create_no_database_file(
    idp: Idp, tmp_path: Path
) -> None:
    table(idp("keys", "init", "--alg", "EdDSA"))

    assert idp("keys", "rotate", "--force").exit_code == 0

    assert not (tmp_path / "idp.db").exists()


def test_an_unreachable_database_is_a_warning_after_the_change(idp: Idp) -> None:
    before = table(idp("keys", "init", "--alg", "EdDSA"))

    result = idp(
        "keys",
        "rotate",
        "--force",
        IDP_DATABASE_URL="postgresql+asyncpg://x@127.0.0.1:9/none",
        IDP_DB_CONNECT_TIMEOUT="1",
    )

    assert result.exit_code == 0, result.output
    assert "not in the audit log" in result.stderr
    assert "database unreachable" in result.stderr
    assert table(idp("keys", "list"))[0]["kid"] == before[1]["kid"]
