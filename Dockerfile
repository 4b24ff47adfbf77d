# Image of one ETL service (extractor, transformer, saver or api): Alpine Python, wheels only, non-root,
# read-only root friendly. The build argument SERVICE names the service; build from the repository root:
#   docker build --build-arg SERVICE=saver -t etl-saver:1.0.0 .
# docker-compose.yml, the chart's images and `make kind-up` all build from this one file.
# The base is pinned by tag; for a release, pin it by digest too (docker buildx imagetools inspect <tag>):
#   FROM python:3.12.12-alpine3.22@sha256:<digest>

# --- build: a virtualenv with the pinned dependencies, from musllinux wheels only ------------------
FROM python:3.12.12-alpine3.22 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# The venv has no pip of its own: the base image's pip installs into it, and the final image runs none.
RUN python -m venv --without-pip /opt/venv
COPY pyproject.toml requirements.lock /tmp/
# The runtime dependencies declared in pyproject.toml, at the exact versions of the lock (-c).
# --only-binary: a dependency without a musllinux wheel fails the build instead of needing a compiler.
# Before the service's own files, so the four images share this layer and it is built once.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime.txt \
    && pip --python /opt/venv/bin/python install --only-binary=:all: -c /tmp/requirements.lock -r /tmp/runtime.txt
ARG SERVICE
# The service and the shared package, laid out as the import names; compiled now because the
# root filesystem is read-only at run time. An unknown SERVICE fails here (no such folder).
COPY services/etl_common /app/etl_common
# The operators' command line, so `python -m etlctl` works in every pod (docs/operations.md).
COPY services/etlctl /app/etlctl
COPY services/${SERVICE} /app/${SERVICE}
RUN python -m compileall -q /app /opt/venv/lib

# --- run: no compiler, no pip in the venv, a fixed non-root uid -----------------------------------
FROM python:3.12.12-alpine3.22
ARG SERVICE
# Writable paths (/var/lib/etl for data, /tmp) are volumes or tmpfs; owned by the service user so a
# fresh named volume inherits the ownership.
RUN addgroup -S -g 10001 etl \
    && adduser -S -D -H -u 10001 -G etl -h /var/lib/etl -s /sbin/nologin etl \
    && mkdir -p /var/lib/etl/database /var/lib/etl/data \
    && chown -R 10001:10001 /var/lib/etl
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# ETL_OPS_* serve the workers' health and metrics, ETL_API_* the API; each service reads only its own.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ETL_SERVICE=${SERVICE} \
    ETL_LOG_FORMAT=json \
    ETL_OPS_HOST=0.0.0.0 \
    ETL_OPS_PORT=9100 \
    ETL_API_HOST=0.0.0.0 \
    ETL_API_PORT=8000
WORKDIR /var/lib/etl
USER 10001:10001
# 9100: the workers' health and metrics; 8000: the API.
EXPOSE 9100 8000
# The service traps SIGTERM: it stops reading, finishes the current page, acks and exits.
STOPSIGNAL SIGTERM
# No curl in the image: the standard library asks the service's own health endpoint (the API's port
# for the api, the ops port for the workers).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; api = os.environ['ETL_SERVICE'] == 'api'; port = os.environ['ETL_API_PORT' if api else 'ETL_OPS_PORT']; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4)"]
# exec: the service is PID 1's only child (compose and Kubernetes give it the command explicitly too).
CMD ["/bin/sh", "-c", "exec python -m \"$ETL_SERVICE\""]
