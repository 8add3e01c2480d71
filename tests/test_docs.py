"""The configuration reference in docs/operations.md is generated from the settings."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from idp.configuration.settings import Settings

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "settings_reference.py"
_spec = importlib.util.spec_from_file_location("settings_reference", SCRIPT)
assert _spec is not None and _spec.loader is not None
docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs)


def test_committed_reference_is_up_to_date() -> None:
    current = docs.DOCUMENT.read_text(encoding="utf-8")
    assert docs.render(current) == current, (
        "docs/operations.md is out of date: run python scripts/settings_reference.py --write"
    )


def test_every_setting_is_in_the_reference_with_its_default() -> None:
    reference = docs.settings_reference()
    for name in Settings.model_fields:
        assert f"`IDP_{name.upper()}`" in reference
    assert "| `IDP_BCRYPT_ROUNDS` | `12` | ≥ 4, ≤ 31 |" in reference
    assert "| `IDP_KEYS_PASSPHRASE` | unset | secret |" in reference
    assert "`text` \\| `json`" in reference


def test_a_setting_without_description_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Undocumented(Settings):
        mystery: int = Field(1)

    monkeypatch.setattr(docs, "Settings", Undocumented)
    with pytest.raises(ValueError, match="mystery"):
        docs.settings_reference()


def test_check_fails_on_a_stale_document(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "operations.md"
    stale.write_text(f"# ops\n{docs.START}\n| old |\n{docs.END}\nafter\n", encoding="utf-8")
    monkeypatch.setattr(docs, "DOCUMENT", stale)
    assert docs.main(["--check"]) == 1
    assert docs.main(["--write"]) == 0
    assert docs.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8").endswith(f"{docs.END}\nafter\n")


@pytest.mark.slow
def test_script_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
