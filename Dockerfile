# One image for every service: `aether serve <service>` picks which one runs.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY aether ./aether
COPY shared ./shared
COPY services ./services
COPY ops ./ops
COPY data ./data
RUN pip install . && useradd --system --uid 10001 aether
USER aether
EXPOSE 8000
ENTRYPOINT ["aether"]
CMD ["serve", "oms", "--host", "0.0.0.0", "--port", "8000"]
