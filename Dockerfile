# One image for every SAGA process: web (ASGI), celery worker, celery beat, simulated node agent.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=controlplane.settings.production SAGA_STATE_DIR=/var/lib/saga
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY controlplane ./controlplane
COPY plugins ./plugins
COPY nodeagent ./nodeagent
COPY frontend ./frontend
COPY manage.py ./
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --home /var/lib/saga saga && mkdir -p /var/lib/saga && chown saga /var/lib/saga
USER saga
EXPOSE 8000
CMD ["saga", "serve", "--host", "0.0.0.0", "--port", "8000"]
