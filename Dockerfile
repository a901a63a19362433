# keysilo-identity and keysilo-edge in one runtime image (see k8s/README.md).
# CI does not build it: its machines have no container runtime.
#
#   docker build --target identity -t ghcr.io/keysilo/identity:0.1.0 .
#   docker build --target edge -t ghcr.io/keysilo/edge:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build reads: no target/, no .local/ (development secrets).
COPY Cargo.toml Cargo.lock ./
COPY libs libs
COPY services services
COPY migrations migrations
# Workspace members the manifest lists, though only the services are built.
COPY integration-tests integration-tests
COPY load-tests/driver load-tests/driver
RUN cargo build --release --locked -p keysilo-identity -p keysilo-edge

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keysilo-identity /src/target/release/keysilo-edge /usr/local/bin/
# The uid and gid the Kubernetes manifests run as (numeric: no passwd entry needed).
USER 10001:10001

# One image per service, each starting its own binary under `docker run`
# (the manifests name the binary anyway).
FROM runtime AS edge
EXPOSE 8081
ENTRYPOINT ["keysilo-edge"]
CMD ["serve"]

FROM runtime AS identity
EXPOSE 8080
ENTRYPOINT ["keysilo-identity"]
CMD ["serve"]
