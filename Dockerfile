# shoprank container: multi-stage release build, slim non-root runtime.
#
#   docker build -t shoprank .                       # fetches the encoder at build time
#   docker build --build-arg FETCH_MODEL=0 -t shoprank .   # ...or not, and mount it:
#   docker run -p 8080:8080 \
#     -v "$PWD/models/all-MiniLM-L6-v2:/app/models/all-MiniLM-L6-v2:ro" shoprank
#
# The trained head (models/head.*, models/stats.json.gz) is committed and copied in.

# Rust >= 1.89: the AVX-512 gemm kernels need stabilised AVX-512 intrinsics.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && printf 'fn main() {}\n' > benches/encoder.rs && cp benches/encoder.rs benches/recommend.rs \
 && cargo build --release --locked --bin shoprank || true
COPY src src
COPY config config
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin shoprank

COPY scripts/fetch-model scripts/fetch-model
ARG FETCH_MODEL=1
RUN mkdir -p models/all-MiniLM-L6-v2 \
 && if [ "$FETCH_MODEL" = "1" ]; then scripts/fetch-model models/all-MiniLM-L6-v2; fi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app shoprank
WORKDIR /app
COPY --from=build /src/target/release/shoprank /usr/local/bin/shoprank
COPY --from=build /src/models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2
COPY config config
COPY models/head.safetensors models/head.json models/stats.json.gz models/
USER shoprank
ENV SHOPRANK__SERVER__ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
CMD ["shoprank", "serve", "--config", "config/default.toml"]
