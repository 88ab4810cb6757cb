# syntax=docker/dockerfile:1
# The service image: one image, four commands (see docker-compose.yml and k8s/):
#   api     gunicorn "api.app:create_app()" on 8080 (the default CMD below)
#   worker  celery -A broker.celery_app worker
#   beat    celery -A broker.celery_app beat      (exactly one replica)
#   flower  celery -A broker.celery_app flower    (FLOWER_BASIC_AUTH required)
# No torch here: training runs in the trainer image (trainer/Dockerfile), never in these processes.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

COPY api/ ./api/
COPY broker/ ./broker/

USER 10001:10001
EXPOSE 8080 5555

# Gunicorn's heartbeat files go to /tmp: the root filesystem is read-only in Kubernetes (an emptyDir is mounted there).
CMD ["gunicorn", "--bind", "0.0.0.0:8080", "--workers", "2", "--threads", "4", "--worker-tmp-dir", "/tmp", \
     "--access-logfile", "-", "api.app:create_app()"]
