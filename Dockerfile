# The streamproc image: workers, topic creation and the simulator (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package needs (.dockerignore keeps the rest, .venv above all, out of the context).
COPY pyproject.toml ./
COPY streamproc ./streamproc
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group streamproc

USER streamproc
WORKDIR /home/streamproc
# Owned by the worker's user: a named volume mounted here starts with this ownership.
RUN mkdir -p /home/streamproc/data
ENV STREAMPROC_WEB_HOST=0.0.0.0 \
    STREAMPROC_WEB_PORT=6066 \
    STREAMPROC_DATA_DIR=/home/streamproc/data

EXPOSE 6066
# /healthz over HTTPS when the worker serves it (STREAMPROC_WEB_TLS_CERTFILE): its own
# certificate is not checked on this loopback probe; /healthz needs no credentials.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; tls = bool(os.environ.get('STREAMPROC_WEB_TLS_CERTFILE')); r.urlopen(('https' if tls else 'http') + '://127.0.0.1:%s/healthz' % os.environ.get('STREAMPROC_WEB_PORT', '6066'), timeout=2, context=ssl._create_unverified_context() if tls else None)"]

CMD ["streamproc", "worker"]
