# Local stand-in for python:3.11-slim-bookworm, built by deploy/local-base-images.sh from
# Debian's packages when Docker Hub cannot be reached. Debian's Python 3.11 and pip, made to
# behave like the official image's: `python`, `pip` on PATH, installs into the system
# Python without a virtual environment, and the host's CA bundle for pip.
FROM spheroid-hpo/debian-minbase:bookworm

ENV LANG=C.UTF-8
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    # The official image's pip installs into the system Python; Debian's refuses (PEP 668).
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED

# The host's CA bundle (the file pip uses there), for the registries behind its TLS proxy.
COPY host-ca-bundle.crt /usr/local/share/ca-certificates-host/bundle.crt
RUN printf '[global]\ncert = /usr/local/share/ca-certificates-host/bundle.crt\ntimeout = 180\n' > /etc/pip.conf

LABEL spheroid-hpo.stand-in="python:3.11-slim-bookworm from Debian bookworm packages (deploy/local-base-images.sh)"
CMD ["python3"]
