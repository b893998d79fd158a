# topicgate container image.
#   docker build -t topicgate .
#   docker run -p 3000:3000 -e TOPICGATE__REDIS__URL=redis://redis:6379/0 \
#       -e TOPICGATE__AUTH__JWT__SECRET=... topicgate
# docker-compose.yml runs two replicas behind nginx with Redis.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole tree (less .dockerignore): Cargo reads every target the
# manifest declares (benches, examples) and every workspace member's
# manifest even for a plain build, which builds the gateway only.
COPY . .
# The same lockfile CI tests with (--locked): the image never resolves
# other dependency versions than the ones that were tested.
RUN cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: the trust store rediss:// connections verify Redis against
# (add a private CA to it, or point SSL_CERT_FILE at one).
# curl: the HEALTHCHECK below. The alternatives were worse: a health-check
# subcommand would add a CLI mode the contract the documented command line does not have, and
# bash's /dev/tcp needs a shell and cannot read the HTTP status. curl in
# exec form runs without a shell and fails on any status other than 2xx.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin topicgate
COPY --from=builder /src/target/release/topicgate /usr/local/bin/topicgate
# Root-owned and read-only to the gateway; it watches the directory, so a
# mounted ConfigMap or file over this path reloads live.
COPY config/config.toml /etc/topicgate/config.toml
USER 10001:10001
EXPOSE 3000
# /healthz answers 200 while the process serves (README "HTTP"); /readyz would
# also turn the container unhealthy while Redis is away, which a restart
# does not fix. Port 3000 is server.bind of the shipped config.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--noproxy", "*", "--max-time", "2", "http://127.0.0.1:3000/healthz"]
# Exec form: topicgate is PID 1 and gets SIGTERM itself, then drains
# (server.shutdown_grace_secs) and exits 0.
ENTRYPOINT ["/usr/local/bin/topicgate"]
CMD ["--config", "/etc/topicgate/config.toml"]
