# distillgate on the embedded CPU engine (the default). Build: docker build -t distillgate .
# Pinned by deploy/constraints.txt (the project itself is the one unpinned install).
# torch comes from PyTorch's CPU index, pinned like the `cpu` extra, so no CUDA build is pulled.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md deploy/constraints.txt ./
COPY gateway gateway
COPY calibration calibration
# hadolint ignore=DL3013
RUN pip install --constraint constraints.txt ".[cpu]"
COPY tasks tasks
COPY data data

RUN useradd --create-home --uid 10001 distillgate \
    && mkdir -p /app/models /app/.distillgate \
    && chown -R distillgate /app/models /app/.distillgate
USER 10001

ENV DISTILLGATE_HOST=0.0.0.0 \
    DISTILLGATE_PORT=8000 \
    DISTILLGATE_TASKS_DIR=/app/tasks \
    DISTILLGATE_SPOOL_DIR=/app/.distillgate/spool
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
# The first start trains and calibrates the demo student into /app/models (a volume).
ENTRYPOINT ["distillgate", "serve"]
