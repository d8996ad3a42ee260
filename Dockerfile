# Build: only crates.io (Cargo.lock pinned) and Debian packages.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin runbookd

# Run: slim Debian, tini as PID 1 so that orphans of steps are reaped, non-root.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates curl procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/runbookd --create-home runbookd
COPY --from=build /src/target/release/runbookd /usr/local/bin/runbookd
COPY runbooks /etc/runbookd/runbooks
ENV RUNBOOKD_RUNBOOKS=/etc/runbookd/runbooks \
    RUNBOOKD_DATA_DIR=/var/lib/runbookd \
    RUNBOOKD_LISTEN=0.0.0.0:9095
USER runbookd
WORKDIR /var/lib/runbookd
VOLUME /var/lib/runbookd
EXPOSE 9095
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/runbookd"]
CMD ["serve"]
