# allot's application image: the allot package with Celery, Flower and the CLI on Python 3.11.
# docker-compose.yml runs every allot service from it (migrate, worker, beat, flower); ZooKeeper,
# Redis and PostgreSQL come from their official images, so no Java is needed here. Everything is
# configured through environment variables (ALLOT_*, FLOWER_*).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project's metadata and packages (the list of packages is pyproject.toml's), then a regular
# (not editable) install: the image runs the installed package. allot/testing (the ZooKeeper and
# Redis launchers of tests and make run, which need Java and the Debian jars) is left out by
# .dockerignore: no production module imports it (tests/unit/test_layers.py checks).
COPY pyproject.toml README.md ./
COPY allot ./allot
COPY models ./models
COPY tasks ./tasks
COPY migrations ./migrations
# the demo table work (ALLOT_TASK_MODULES=demo.compaction), imported from the working directory
COPY demo ./demo
RUN pip install . && rm -rf build ./*.egg-info

# Flower's options (the same file make run uses) and a non-root user that owns Flower's state.
COPY flowerconfig.py ./
RUN useradd --create-home --uid 10001 allot \
    && mkdir -p /data \
    && chown allot /data
USER allot
ENV FLOWER_DB=/data/flower.db

CMD ["allot", "--help"]
