# Build: only crates.io (Cargo.lock pinned) and Debian packages.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin runbookd

# Run: slim Debian, tini as PID 1 so that orphans of steps are reaped. root in
# the container, so that steps drop to `nobody` and get the layers that need
# root (their own IPC namespace, a scratch tmpfs, the connect guard where
# the runtime lets cgroup v2 be written): with steps sharing runbookd's user
# they could chmod its files (docs/security.md).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates curl procps \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -m 0700 /var/lib/runbookd
COPY --from=build /src/target/release/runbookd /usr/local/bin/runbookd
COPY runbooks /etc/runbookd/runbooks
ENV RUNBOOKD_RUNBOOKS=/etc/runbookd/runbooks \
    RUNBOOKD_DATA_DIR=/var/lib/runbookd \
    RUNBOOKD_LISTEN=0.0.0.0:9095
WORKDIR /var/lib/runbookd
VOLUME /var/lib/runbookd
EXPOSE 9095
# Ready means a webhook would be acknowledged (the store accepts writes).
# /-/ready answers whatever http.allowed_hosts says; change the port with RUNBOOKD_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS --max-time 4 http://127.0.0.1:9095/-/ready || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/runbookd"]
CMD ["serve"]
