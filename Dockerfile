# Service image. The embedded FerretDB is for development; in containers point MONGODB_URI at
# MongoDB (see docker-compose.yml).
#
# Stage 1 installs exactly what uv.lock pins (runtime dependencies only: no training or dev
# extras) into /app/.venv. Stage 2 copies that environment and the code, owned by root and
# read-only to the service user, which can write nothing but its own home.
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

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/app/.venv/bin:$PATH
RUN useradd --create-home --uid 10001 appuser
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY artifacts ./artifacts
RUN chmod -R a+rX,go-w /app
USER appuser
ENV APP_ENV=production ARTIFACTS_DIR=/app/artifacts DATA_DIR=/app/data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health').status == 200 else 1)"
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
