"""idp-verifier as another service installs it: a wheel built by `uv build`, in a clean venv.

Offline: the wheel's dependencies are pinned to the versions of this repository's environment
(uv.lock), which uv's cache already holds, so the test needs no network and takes a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _uv() -> str:
    uv = ROOT / ".tools" / "bin" / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (scripts/env.sh installs it into .tools/)")
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_the_wheel_installs_alone_and_imports(tmp_path: Path) -> None:
    uv = _uv()
    dist = tmp_path / "dist"
    _run(uv, "build", "--offline", "--wheel", "--out-dir", str(dist), "verifier", cwd=ROOT)
    (wheel,) = dist.glob("idp_verifier-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "idp_verifier/py.typed" in names
    assert "idp_verifier/testing.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)

    pins = _run(uv, "pip", "freeze", "--python", sys.executable, cwd=tmp_path).stdout
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in pins.splitlines() if "idp" not in line and "==" in line)
    )
    venv = tmp_path / "venv"
    _run(uv, "venv", "--quiet", str(venv), "--python", sys.executable, cwd=tmp_path)
    python = venv / "bin" / "python"
    install = (uv, "pip", "install", "--offline", "--quiet", "--python", str(python))
    _run(*install, "-c", str(constraints), str(wheel), cwd=tmp_path)

    probe = (
        "import importlib.util, idp_verifier\n"
        "from idp_verifier import TokenVerifier, SyncTokenVerifier, Permissions\n"
        "print(idp_verifier.__file__)\n"
        "print(sorted(m for m in ('joserfc', 'fastapi', 'idp') if importlib.util.find_spec(m)))\n"
    )
    lines = _run(str(python), "-c", probe, cwd=tmp_path).stdout.splitlines()
    assert lines[0].startswith(str(venv))  # the installed copy, not this checkout's source
    assert lines[1] == "[]"  # neither joserfc, FastAPI nor the server came along

    # The test helpers say which extra they need; with it they work.
    missing = subprocess.run(
        [str(python), "-c", "import idp_verifier.testing"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "pip install 'idp-verifier[testing]'" in missing.stderr
    _run(
        *install, "-c", str(constraints), f"idp-verifier[testing] @ {wheel.as_uri()}", cwd=tmp_path
    )
    minted = (
        "from idp_verifier.testing import Signer\n"
        "signer = Signer.rsa('k1')\n"
        "print(signer.jwk()['kid'], signer.token('https://idp.test').count('.'))\n"
    )
    assert _run(str(python), "-c", minted, cwd=tmp_path).stdout.split() == ["k1", "2"]
