# syntax=docker/dockerfile:1
# Production image: the same install steps as the README, runtime dependencies only.
# Config and secrets are mounted at run time, never baked in:
#   docker run -v /etc/wallet-signer:/etc/wallet-signer:ro -v ws-state:/var/lib/wallet-signer \
#     -p 50051:50051 IMAGE serve
# with server.listen = "0.0.0.0:50051" and tls_cert_file / tls_key_file / client_ca_file set.
# Under mTLS the HEALTHCHECK needs a client certificate too: give it through the environment,
#   -e WALLET_SIGNER_HEALTH_TLS_CA=... -e WALLET_SIGNER_HEALTH_TLS_CERT=...
#   -e WALLET_SIGNER_HEALTH_TLS_KEY=... [-e WALLET_SIGNER_HEALTH_TLS_SERVER_NAME=...]
# (files mounted read-only; docs/deploy/image.md). BASE_IMAGE: any Debian-based image with
# python3 >= 3.11 and its venv module; `make image` builds one locally with mmdebstrap.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# lets deploy/image/build.sh find superseded build stages (it keeps the newest: pip's cache)
LABEL wallet-signer.stage=build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY signer ./signer
# A virtualenv: the same on the python image and on Debian's python3 (which refuses a system-wide
# pip install, PEP 668). The final stage copies it whole, at the same path.
RUN python3 -m venv /opt/wallet-signer \
    && /opt/wallet-signer/bin/pip install --no-cache-dir --disable-pip-version-check \
        ".[pkcs11,kms,postgres]"

FROM ${BASE_IMAGE}
# softhsm2 provides libsofthsm2.so for the PKCS#11 backend; mount a real HSM's library instead.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin signer \
    && install -d -o signer -g signer -m 0700 /var/lib/wallet-signer
COPY --from=build /opt/wallet-signer /opt/wallet-signer
# the embedded store (audit log, frozen keys) lives on a volume; use PostgreSQL for replicas
VOLUME /var/lib/wallet-signer
ENV PATH=/opt/wallet-signer/bin:$PATH \
    WALLET_SIGNER_CONFIG=/etc/wallet-signer/config.toml \
    WALLET_SIGNER_STORE__URL=sqlite:///var/lib/wallet-signer/state.db \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER signer
EXPOSE 50051
# `health` takes its flags' defaults from WALLET_SIGNER_HEALTH_* (server, TLS files): see above.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["wallet-signer", "health"]
ENTRYPOINT ["wallet-signer"]
CMD ["serve"]
