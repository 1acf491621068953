# Service image. The embedded FerretDB is for development; in containers point MONGODB_URI at
# MongoDB (see docker-compose.yml).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
RUN pip install '.[train]' \
    && useradd --create-home --uid 10001 appuser \
    && mkdir -p /app/artifacts /app/data && chown -R appuser /app
COPY --chown=appuser artifacts ./artifacts
USER appuser
ENV APP_ENV=production ARTIFACTS_DIR=/app/artifacts DATA_DIR=/app/data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health').status == 200 else 1)"
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
