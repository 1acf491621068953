# Service image. The embedded FerretDB is for development; in containers point MONGODB_URI at
# MongoDB (see docker-compose.yml).
#
# Stage `build` installs exactly what uv.lock pins (runtime dependencies only: no training or
# dev extras) into /app/.venv; `build-train` adds the `train` extra (MLflow) for the one-shot
# loader. The final stages copy an environment and the code, owned by root and read-only to
# the service user, which can write nothing but its own home and /var/lib/tmdb-analytics
# (artifacts trained at run time, backups, MLflow runs: mount volumes there).
#
#   docker build .                    # the service (`runtime`, the last stage)
#   docker build --target trainer .   # the same plus MLflow: loads data and trains
FROM python:3.11-slim AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
# Dependencies first, in their own layer, so code changes do not reinstall them.
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3
COPY app ./app
COPY training ./training
RUN uv sync --frozen --no-dev --no-editable --python /usr/local/bin/python3

FROM build AS build-train
RUN uv sync --frozen --no-dev --no-editable --extra train --python /usr/local/bin/python3

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/app/.venv/bin:$PATH
RUN useradd --create-home --uid 10001 appuser \
    && mkdir -p /var/lib/tmdb-analytics/artifacts /var/lib/tmdb-analytics/backups \
        /var/lib/tmdb-analytics/local \
    && chown -R appuser /var/lib/tmdb-analytics
WORKDIR /app
ENV APP_ENV=production ARTIFACTS_DIR=/app/artifacts DATA_DIR=/app/data \
    BACKUP_DIR=/var/lib/tmdb-analytics/backups LOCAL_DB_DIR=/var/lib/tmdb-analytics/local
EXPOSE 8000

FROM base AS trainer
COPY --from=build-train /app/.venv /app/.venv
COPY artifacts ./artifacts
RUN chmod -R a+rX,go-w /app
USER appuser
CMD ["tmdb-analytics", "bootstrap"]

FROM base AS runtime
COPY --from=build /app/.venv /app/.venv
COPY artifacts ./artifacts
RUN chmod -R a+rX,go-w /app
USER appuser
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health').status == 200 else 1)"
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
