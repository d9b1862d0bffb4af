# The LifeTales app image: one image for every process of the Procfile (web, workers, beat,
# flower, release). docker-compose.yml picks the process with `command:`; the default is `web`.
FROM python:3.11-slim

# PYTHONPATH=/app: the copied source is what gets imported (the same code the wheel carries).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    PORT=3000 \
    MEDIA_DIR=/data/media \
    LIFETALES_VAR_DIR=/app/var

RUN groupadd --system --gid 10001 lifetales \
    && useradd --system --uid 10001 --gid lifetales --create-home --home-dir /home/lifetales \
       --shell /usr/sbin/nologin lifetales

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY api ./api
COPY workers ./workers
COPY agents ./agents
COPY models ./models
COPY migrations ./migrations
COPY celeryconfig.py config.py gunicorn_conf.py lifetales_cli.py telemetry.py alembic.ini ./

# The project itself (console script `lifetales`); its dependencies are already in place.
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && mkdir -p /app/var /data/media \
    && chown -R lifetales:lifetales /app/var /data/media

USER lifetales

EXPOSE 3000

# Shell form so $PORT and $WEB_CONCURRENCY expand as in the Procfile; exec so gunicorn is PID 1
# and gets SIGTERM directly.
CMD exec gunicorn 'api:create_app()' --config python:gunicorn_conf --bind 0.0.0.0:$PORT --worker-class gthread --workers ${WEB_CONCURRENCY:-2} --threads 32 --timeout 120
