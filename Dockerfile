# One image for every Yiwang process (five services, the gateway, the local SMS provider and mail
# server); docker-compose.yml gives each container its command, as infra/system.py does for `make run`.
# tests/structure/test_containers.py checks this file against infra/system.py and the code.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the locked dependencies in a virtualenv ---------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.in requirements.lock /tmp/deps/
# Every version comes from requirements.lock (a constraints file pins each package exactly); the
# tools that only tests, load tests and linting need are left out of the image.
RUN grep -vE '^(locust|selenium|hypothesis|schemathesis|ruff|pytest([-[:alnum:]]*)?)([^-[:alnum:]]|$)' /tmp/deps/requirements.in \
        > /tmp/deps/runtime.in \
    && /opt/venv/bin/pip install --no-compile -c /tmp/deps/requirements.lock -r /tmp/deps/runtime.in \
    && /opt/venv/bin/pip check

# --- runtime: the virtualenv and the code, nothing else -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 yiwang \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin yiwang \
    && mkdir -p /data/sms /data/mail \
    && chown -R 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY config.yml ./
COPY contracts ./contracts
COPY services ./services
COPY gateway ./gateway
# infra/*.py: the local SMS provider (its own container), `python -m infra.seed`, `infra.deadletters`
# and `infra.topology` (the queues, declared once before the services start).
COPY infra/__init__.py infra/seed.py infra/sms_provider.py infra/deadletters.py infra/system.py infra/topology.py ./infra/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    YIWANG_METRICS_HOST=0.0.0.0 \
    YIWANG_METRICS_PORT=9100
# A fixed numeric uid, so orchestrators can check runAsNonRoot; it owns only /data (and $HOME).
USER 10001:10001
# Liveness of every nameko process: its Prometheus endpoint (services/common/metrics.py) is served
# from the process's own hub, so it answers only while the process runs and is not wedged. OPTIONS
# answers 200 without collecting, so probes neither cost a scrape nor query RabbitMQ's management
# API. The gateway's container adds readiness (/readyz) in docker-compose.yml; the SMS provider and
# mail server have their own checks there.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:%s/metrics' % os.environ['YIWANG_METRICS_PORT'], method='OPTIONS'), timeout=4)"]
EXPOSE 8000 9100
CMD ["nameko", "run", "--config", "config.yml", "gateway.service:Gateway"]
