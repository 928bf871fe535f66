# The spheroid-hpo image for GPU servers (see docker-compose.yml).
# CUDA comes inside PyTorch's wheels from PyPI: the host needs only the NVIDIA driver
# and the NVIDIA Container Toolkit.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# PyTorch first, in a layer of its own: gigabytes of CUDA libraries that change far less
# often than the code. The versions the test suite runs, within pyproject.toml's ranges.
RUN pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY spheroid_hpo ./spheroid_hpo
RUN pip install .
COPY studies ./studies

# An unprivileged user. /shared (artifacts and checkpoints: a volume) and /app/runs (the
# default runs folder: this container's split manifest, demo data, logs) are where it writes.
RUN useradd --create-home --uid 1000 spheroid \
    && mkdir -p /shared /app/runs \
    && chown spheroid:spheroid /shared /app/runs
USER spheroid

CMD ["spheroid-hpo", "--help"]
