# syntax=docker/dockerfile:1
# Mailwarden: Slack responder for suspicious Microsoft 365 sign-ins.
#
#   docker build -t mailwarden .
#   docker run -d --name mailwarden -v mailwarden-data:/data \
#     -e MAILWARDEN_SLACK_BOT_TOKEN=xoxb-... -e MAILWARDEN_SLACK_APP_TOKEN=xapp-... \
#     -e MAILWARDEN_SOC_CHANNEL=C... -e MAILWARDEN_SOC_USERGROUP=S... \
#     -e MAILWARDEN_MS_TENANT_ID=... -e MAILWARDEN_MS_CLIENT_ID=... -e MAILWARDEN_MS_CLIENT_SECRET=... \
#     mailwarden
#
# Socket Mode (the default) needs no inbound port; port 3000 serves /healthz, /metrics and, in HTTP
# mode (MAILWARDEN_SLACK_MODE=http), Slack's POST /slack/events. Several replicas need PostgreSQL:
# set MAILWARDEN_DATABASE_URL=postgresql://... instead of the SQLite file on /data.

# --- build: install the package and its dependencies into a self-contained venv -----------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md is the project's readme in pyproject.toml: the build fails without it.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY actions ./actions
COPY sandbox ./sandbox
RUN pip install --no-cache-dir . \
    && python -c "import bot.store.db as d; assert (d.MIGRATIONS / 'env.py').is_file(), 'migrations missing'"

# --- runtime: the venv only, as an unprivileged user ---------------------------------------------
FROM python:3.11-slim

RUN groupadd --system --gid 10001 mailwarden \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin mailwarden \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILWARDEN_DATABASE_URL=sqlite+aiosqlite:////data/mailwarden.db

WORKDIR /app
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"]

ENTRYPOINT ["mailwarden"]
CMD ["run"]
