# The one image Ferry ships: `ferry controller`, `ferry gateway`, `ferry echo` (and later the
# sidecar) are subcommands of the same binary.
#   docker build -t ghcr.io/ferry-dev/ferry:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ferry && cp target/release/ferry /ferry

# glibc and libgcc only; runs as uid 65532 unless the chart says otherwise (1337).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ferry /usr/local/bin/ferry
ENTRYPOINT ["/usr/local/bin/ferry"]
