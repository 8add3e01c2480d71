# The idp image: a slim Python, the locked dependencies, a non-root user, the keystore on a
# volume. Stages: `build` installs with uv from uv.lock; `orders` is the example service that
# verifies idp's tokens; the last stage is the idp server (the default target).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/app/.venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1
# The same uv as scripts/env.sh, from PyPI.
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
COPY verifier/pyproject.toml verifier/README.md verifier/
COPY verifier/src verifier/src
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations migrations
COPY idp idp
# Installed in place: `idp db upgrade` finds alembic.ini and migrations/ beside the package.
RUN uv sync --frozen --no-dev

FROM python:${PYTHON_VERSION}-slim AS orders
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin orders
COPY verifier /src/verifier
RUN pip install --no-cache-dir "/src/verifier[fastapi]" "uvicorn>=0.30"
WORKDIR /app
COPY examples examples
USER orders
EXPOSE 8001

FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 idp \
    && useradd --system --uid 10001 --gid idp --home-dir /var/lib/idp --shell /usr/sbin/nologin idp \
    && install -d -o idp -g idp -m 0700 /var/lib/idp /var/lib/idp/keys
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    IDP_KEYS_DIR=/var/lib/idp/keys
# The working directory is the user's own: a default SQLite file or a .env would live here.
WORKDIR /var/lib/idp
USER idp
# Private keys (0600) live here; every replica mounts the same volume.
VOLUME ["/var/lib/idp/keys"]
EXPOSE 8000
# SIGTERM lets requests in flight finish (up to 30 s); give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["idp", "serve", "--host", "0.0.0.0", "--port", "8000"]
