#!/usr/bin/env bash
# Local stand-ins for the two Docker Hub images the deployment is built on, for machines that
# cannot pull from Docker Hub (CI, air-gapped servers):
#   python:3.11-slim-bookworm   Debian bookworm's Python 3.11 and pip, with this host's CA bundle
#   postgres:16-alpine          Debian bookworm's PostgreSQL (15), with the official entrypoint's contract
# Both are built from Debian's packages: `debootstrap --variant=minbase bookworm`, `docker import`,
# then deploy/base-images/*.Dockerfile. The Dockerfile and docker-compose.yml stay as users run
# them; only their base images are replaced, under the same tags.
#
#   deploy/local-base-images.sh            # an image already here, or pullable, is left alone
#   deploy/local-base-images.sh --rebuild  # rebuild the stand-ins (replaces the local tags)
#
# Needs: root, docker, debootstrap. DEBIAN_MIRROR overrides http://deb.debian.org/debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=spheroid-hpo/debian-minbase:bookworm
PULL_TIMEOUT_S=${PULL_TIMEOUT_S:-60}
declare -A DOCKERFILE=([python:3.11-slim-bookworm]=python.Dockerfile [postgres:16-alpine]=postgres.Dockerfile)

rebuild=false
case "${1:-}" in
    "") ;;
    --rebuild) rebuild=true ;;
    *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

command -v docker >/dev/null || { echo "$0: docker is not installed (apt-get install docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "$0: the Docker daemon does not answer (start dockerd)" >&2; exit 1; }

to_build=()
for tag in python:3.11-slim-bookworm postgres:16-alpine; do
    if ! $rebuild && docker image inspect "$tag" >/dev/null 2>&1; then
        what=$(docker image inspect --format '{{index .Config.Labels "spheroid-hpo.stand-in"}}' "$tag")
        echo "$tag: present${what:+ (the local stand-in: $what)}"
    elif ! $rebuild && timeout "$PULL_TIMEOUT_S" docker pull -q "$tag" >/dev/null 2>&1; then
        echo "$tag: pulled from the registry"
    else
        to_build+=("$tag")
    fi
done
[ ${#to_build[@]} -gt 0 ] || exit 0

echo "BUILDING LOCAL STAND-INS for ${to_build[*]} from Debian's packages" \
     "(Docker Hub cannot be reached, or --rebuild): the images are not the official ones."
started=$SECONDS

if $rebuild || ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "$0: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap --variant=minbase bookworm from $MIRROR ..."
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" > "$rootfs.log" 2>&1 || {
        tail -n 20 "$rootfs.log" >&2; echo "$0: debootstrap failed (log above)" >&2; exit 1; }
    rm -f "$rootfs.log"
    # The same sources as the official Debian images; no cache, no recommends, no documentation.
    echo "deb $MIRROR bookworm main" > "$rootfs/etc/apt/sources.list"
    echo "deb $MIRROR bookworm-updates main" >> "$rootfs/etc/apt/sources.list"
    echo "deb ${MIRROR%/debian}/debian-security bookworm-security main" >> "$rootfs/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$rootfs/etc/apt/apt.conf.d/90stand-in"
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
        > "$rootfs/etc/dpkg/dpkg.cfg.d/90stand-in"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "$BASE: imported"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here"/base-images/* "$context/"
# pip's CA bundle on this host (PIP_CERT, pip.conf's cert, else the system bundle).
cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$cert" ] || { echo "$0: no CA bundle at $cert (set PIP_CERT)" >&2; exit 1; }
cp "$cert" "$context/host-ca-bundle.crt"
for tag in "${to_build[@]}"; do
    echo "$tag: building the stand-in (deploy/base-images/${DOCKERFILE[$tag]}) ..."
    # Its output only when it fails (the legacy builder's deprecation notice is noise here).
    docker build -t "$tag" -f "$context/${DOCKERFILE[$tag]}" "$context" > "$context/build.log" 2>&1 || {
        tail -n 30 "$context/build.log" >&2; echo "$0: building the $tag stand-in failed (log above)" >&2; exit 1; }
    echo "$tag: built, $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
done
echo "stand-ins ready in $((SECONDS - started)) s"
