# Sourced by the README's commands: make .venv match uv.lock, using a pinned uv that is itself
# installed into .tools/ with pip. Needs only python3 (3.11+) with venv and pip.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UV_VERSION=0.13.9
cd "$ROOT"
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "==> installing uv $UV_VERSION into .tools/" >&2
  python3 -m venv .tools
  .tools/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
export UV_PROJECT_ENVIRONMENT="$ROOT/.venv"
# The stamp says which uv.lock .venv was last synced with: no line when nothing changed.
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv from uv.lock (first run: a minute or two)" >&2
elif [ uv.lock -nt .venv/.synced ] || [ pyproject.toml -nt .venv/.synced ]; then
  echo "==> syncing .venv with uv.lock" >&2
fi
.tools/bin/uv sync --frozen --quiet --python "$(command -v python3)"
touch .venv/.synced
export PATH="$ROOT/.venv/bin:$PATH"
