# syntax=docker/dockerfile:1
# Production image: the same install steps as the README, runtime dependencies only.
# Config and secrets are mounted at run time, never baked in:
#   docker run -v /etc/wallet-signer:/etc/wallet-signer:ro -p 127.0.0.1:50051:50051 IMAGE \
#     serve --insecure-listen   # with server.listen = "0.0.0.0:50051" behind a TLS proxy
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY signer ./signer
RUN pip install --no-cache-dir --prefix=/install ".[pkcs11,kms]"

FROM python:3.11-slim
# softhsm2 provides libsofthsm2.so for the PKCS#11 backend; mount a real HSM's library instead.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin signer
COPY --from=build /install /usr/local
ENV WALLET_SIGNER_CONFIG=/etc/wallet-signer/config.toml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER signer
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["wallet-signer", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["wallet-signer"]
CMD ["serve"]
