# Image eplb/eplb-worker: the worker daemon on Debian 12.
# Build the binary first: bazel build -c opt //worker:eplb_worker
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 && rm -rf /var/lib/apt/lists/*
COPY bazel-bin/worker/eplb_worker /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/eplb_worker"]
