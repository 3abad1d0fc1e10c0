# Image eplb/eplb-controller: the controller binary on Debian 12 (the build machine's system).
# Build the binary first: bazel build -c opt //eplb_controller:eplb_controller //eplb_controller:eplbctl
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 \
      libabsl20220623 && rm -rf /var/lib/apt/lists/*
COPY bazel-bin/eplb_controller/eplb_controller bazel-bin/eplb_controller/eplbctl /usr/local/bin/
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/eplb_controller"]
