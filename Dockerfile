# syntax=docker/dockerfile:1
# fleetlet operator image: built in the official Rust image, run from distroless (glibc, CA certificates,
# no shell, no package manager) as a non-root user.
#
#   docker build -t fleetlet:dev .
#
# The chart runs it as UID 65532 with a read-only root filesystem and every capability dropped.

# ---- build ----
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fleetlet \
 && install -D -m 0755 target/release/fleetlet /out/fleetlet

# ---- runtime ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/fleetlet /usr/local/bin/fleetlet
USER 65532:65532
# 8080: /metrics, 8081: /healthz and /readyz; kubelet endpoints from --kubelet-port-base (10250) upwards.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/fleetlet"]
CMD ["run"]
