# The billing app image: `billing` CLI and worker (see docker-compose.yml, docs/PRODUCTION.md).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BILLING_DATA_DIR=/data

WORKDIR /app

# Dependencies first so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY billing ./billing
COPY store ./store
COPY services ./services
COPY activities ./activities
COPY workflows ./workflows
COPY config ./config
COPY starter ./starter
COPY worker.py ./
COPY examples ./examples
RUN pip install . \
    && groupadd --system --gid 10001 billing \
    && useradd --system --uid 10001 --gid billing --home-dir /app --shell /usr/sbin/nologin billing \
    && mkdir -p /data \
    && chown billing:billing /data

USER billing
ENTRYPOINT ["billing"]
CMD ["worker"]
