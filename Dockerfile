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
# Then the other dependencies, from pyproject.toml alone (with a placeholder package and README):
# a change to the code or the README does not fetch them again.
COPY pyproject.toml ./
RUN mkdir spheroid_hpo && touch spheroid_hpo/__init__.py README.md \
    && pip install . && pip uninstall -y spheroid-hpo \
    && rm -rf spheroid_hpo README.md build *.egg-info
COPY README.md ./
COPY spheroid_hpo ./spheroid_hpo
RUN pip install .
COPY studies ./studies

# An unprivileged user. /shared (artifacts and checkpoints: a volume) and /app/runs (the
# default runs folder: this container's split manifest, demo data, logs) are where it writes.
# A new named volume takes these folders and their owner from the image, so the dashboard,
# which starts beside the first workers, finds /shared/artifacts already there.
RUN useradd --create-home --uid 1000 spheroid \
    && mkdir -p /shared/artifacts /shared/checkpoints /shared/runs /app/runs \
    && chown -R spheroid:spheroid /shared /app/runs
USER spheroid

CMD ["spheroid-hpo", "--help"]
