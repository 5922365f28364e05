# The one image Ferry ships: `ferry controller`, `ferry gateway`, `ferry sidecar`,
# `ferry sidecar-init`, `ferry echo` are subcommands of the same binary.
#   docker build -t ghcr.io/ferry-dev/ferry:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ferry && cp target/release/ferry /ferry

# Debian slim rather than distroless: `ferry sidecar-init` runs iptables-restore in the pod's
# network namespace. The chart and the injector set the user (1337 for proxies).
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /ferry /usr/local/bin/ferry
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/ferry"]
