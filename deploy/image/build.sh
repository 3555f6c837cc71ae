#!/usr/bin/env bash
# Builds the wallet-signer image with podman, without pulling from any registry of images:
#
#   deploy/image/build.sh [IMAGE] [BASE_IMAGE]
#       (defaults: localhost/wallet-signer:dev localhost/wallet-signer-base:bookworm)
#
# BASE_IMAGE localhost/wallet-signer-base:* is made here once, when missing, from Debian packages
# (mmdebstrap, minbase + python3 + python3-venv, bookworm: Python 3.11); any other BASE_IMAGE
# (e.g. python:3.11-slim) is used as podman finds or pulls it. docs/deploy/image.md explains the
# flags. Needs root, podman, runc and mmdebstrap (`make image` installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:-localhost/wallet-signer:dev}"
base="${2:-localhost/wallet-signer-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if [[ "$base" == localhost/wallet-signer-base:* ]] && ! podman image exists "$base"; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "building the base image $base with mmdebstrap (Debian bookworm, minbase)"
    # stdin closed: mmdebstrap would otherwise read sources.list lines from a non-terminal stdin
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs.tar" "$mirror" "deb $security bookworm-security main" </dev/null
    podman import --quiet --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$base" >/dev/null
fi

# --format docker: the OCI format has no HEALTHCHECK, podman would drop it.
# --isolation chroot: no nested user namespace or cgroup set-up needed for RUN steps.
# --network=host and the host's CA bundle: pip and apt-get reach their registries as the host does
# (also behind a TLS-inspecting proxy); the bundle is mounted for the build only, in no layer.
previous="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
podman build --format docker --isolation chroot --network=host \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg "BASE_IMAGE=$base" -t "$image" . </dev/null
podman image inspect --format '{{.Id}} {{.Size}}' "$image" \
    | awk -v image="$image" '{printf "built %s (%s): %.0f MB\n", image, substr($1, 1, 12), $2 / 1e6}'

# What this build superseded: the previous image of that name, and all but the newest build stage
# (which holds the pip install layer the next build reuses when pyproject.toml and signer/ match).
current="$(podman image inspect --format '{{.Id}}' "$image")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true  # still used by a container: left alone
fi
podman images --filter dangling=true --filter label=wallet-signer.stage=build \
        --format '{{.CreatedAt}}|{{.ID}}' | sort -r | tail -n +2 | cut -d'|' -f2 \
    | xargs -r podman rmi >/dev/null 2>&1 || true
