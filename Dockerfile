# One image for every service: `aether serve <service>` picks which one runs (deploy/helm/aether-platform).
# Multi-stage: the build stage installs the package into a virtual environment; the runtime stage copies only that
# (no compiler, no pip cache) and runs as the numeric non-root user the chart's securityContext expects (10001).
# The base is pinned to an exact tag; pin its digest too (python:3.11.14-slim-bookworm@sha256:...) in your registry.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/aether
COPY pyproject.toml README.md ./
COPY aether ./aether
COPY shared ./shared
COPY services ./services
COPY ops ./ops
COPY data ./data
COPY ml ./ml
RUN /opt/aether/bin/pip install .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/aether/bin:$PATH HOME=/tmp
# pg_dump for `aether ops backup`; nothing else from apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aether \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin aether
COPY --from=build /opt/aether /opt/aether
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["aether"]
CMD ["serve", "oms", "--host", "0.0.0.0", "--port", "8000"]
