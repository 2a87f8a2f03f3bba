# One image for every service: `aether serve <service>` picks which one runs (deploy/helm/aether-platform).
# Multi-stage: the build stage installs the package into a virtual environment; the runtime stage copies only that
# (no compiler, no pip cache) and runs as the numeric non-root user the chart's securityContext expects (10001).
# The base is pinned to an exact tag; pin its digest too (python:3.11.14-slim-bookworm@sha256:...) in your registry.
# Two targets: `runtime` (the default, last stage: services, workers, ops jobs) and `ml` (the same plus the `ml` and
# `torch` extras, for the chart's ml-signals worker, retraining CronJob and HPO Job): docker build --target ml.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# torch from the PyTorch CPU wheel index: PyPI's Linux wheel bundles CUDA (several GB); the CPU build is ~200 MB and
# the ML workloads here run on CPU nodes. Pinned to an exact version, like the base image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.15.0

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

FROM build AS build-ml
ARG TORCH_INDEX_URL
ARG TORCH_VERSION
RUN /opt/aether/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && /opt/aether/bin/pip install ".[ml,torch]"

FROM ${PYTHON_IMAGE} AS runtime-base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/aether/bin:$PATH HOME=/tmp
# pg_dump for `aether ops backup`; nothing else from apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aether \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin aether

# The ML image: no HTTP port (workers and jobs); runs `aether ml ...` (the chart sets the arguments).
FROM runtime-base AS ml
COPY --from=build-ml /opt/aether /opt/aether
USER 10001:10001
ENTRYPOINT ["aether"]
CMD ["ml", "--help"]

FROM runtime-base AS runtime
COPY --from=build /opt/aether /opt/aether
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["aether"]
CMD ["serve", "oms", "--host", "0.0.0.0", "--port", "8000"]
