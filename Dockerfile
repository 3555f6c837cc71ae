# syntax=docker/dockerfile:1
# Production image: the same install steps as the README, runtime dependencies only.
# Config and secrets are mounted at run time, never baked in:
#   docker run -v /etc/wallet-signer:/etc/wallet-signer:ro -v ws-state:/var/lib/wallet-signer \
#     -p 50051:50051 IMAGE serve
# with server.listen = "0.0.0.0:50051" and tls_cert_file / tls_key_file / client_ca_file set.
# Under mTLS the HEALTHCHECK needs a client certificate too: override it with
#   wallet-signer health --server 127.0.0.1:50051 --tls-ca ... --tls-cert ... --tls-key ...
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY signer ./signer
RUN pip install --no-cache-dir --prefix=/install ".[pkcs11,kms,postgres]"

FROM python:3.11-slim
# softhsm2 provides libsofthsm2.so for the PKCS#11 backend; mount a real HSM's library instead.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin signer \
    && install -d -o signer -g signer -m 0700 /var/lib/wallet-signer
COPY --from=build /install /usr/local
# the embedded store (audit log, frozen keys) lives on a volume; use PostgreSQL for replicas
VOLUME /var/lib/wallet-signer
ENV WALLET_SIGNER_CONFIG=/etc/wallet-signer/config.toml \
    WALLET_SIGNER_STORE__URL=sqlite:///var/lib/wallet-signer/state.db \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER signer
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["wallet-signer", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["wallet-signer"]
CMD ["serve"]
