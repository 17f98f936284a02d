# syntax=docker/dockerfile:1
#
# Bastion gateway image.
#
#   docker build -t bastion-gateway .
#   docker run --rm -p 8000:8000 bastion-gateway serve --demo        # demo: embedded SQLite, mock models
#   docker run --rm -e BASTION_DATABASE_URL=postgresql://... bastion-gateway migrate
#
# The entrypoint is the `bastion` command, so any subcommand runs as `docker run IMAGE <subcommand>`;
# the default one is `serve`. docker-compose.yml runs the full stack (PostgreSQL, Redis, migrations).

# ---------------------------------------------------------------------------------------------- build
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes. Every
# dependency ships manylinux wheels for CPython 3.11 (amd64 and arm64), so no compiler is needed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && pip install --prefix=/install -r /tmp/requirements.txt

# Then the package itself (its migrations and Lua scripts are package data under bastion/).
COPY bastion/ ./bastion/
RUN pip install --prefix=/install --no-deps . \
 && python -c "import pathlib, sys; sys.exit(0 if list(pathlib.Path('/install').rglob('db/migrations/versions/0001_*.py')) else 'migrations missing from the install')"

# ---------------------------------------------------------------------------------------------- runtime
FROM python:3.11-slim AS runtime

# Only the installed packages and the `bastion` script come over: no compiler, no pip cache, no sources.
COPY --from=build /install /usr/local

RUN groupadd --system --gid 10001 bastion \
 && useradd --system --uid 10001 --gid bastion --home-dir /app --no-create-home --shell /usr/sbin/nologin bastion \
 && mkdir -p /app \
 && chown bastion:bastion /app

WORKDIR /app
USER bastion

# BASTION_CONFIG is where docker-compose.yml mounts the models file (read-only).
ENV PYTHONUNBUFFERED=1 \
    BASTION_HOST=0.0.0.0 \
    BASTION_PORT=8000 \
    BASTION_CONFIG=/app/bastion.yaml

EXPOSE 8000

# Liveness through /healthz, without curl (the slim image has none): urlopen raises on a refused
# connection, a timeout or an HTTP error status, which makes the check fail.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

ENTRYPOINT ["bastion"]
CMD ["serve"]
