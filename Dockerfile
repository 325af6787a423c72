# CPU image of mantissad on Debian 12 (LibTorch 1.13). The GPU image builds
# the same sources against a CUDA base's LibTorch 2.x; it replaces this build
# stage when the Kubernetes deployment lands.
#
#   docker build -t mantissad:cpu .
#   docker run -p 50051:50051 -p 9464:9464 mantissad:cpu

FROM debian:12 AS build
WORKDIR /src
COPY . .
# The same install and CMake invocation as the README and CI.
RUN bash deploy/install-deps.sh \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMANTISSA_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target mantissad mantissa

FROM debian:12-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libtorch1.13 libopenblas0-pthread libgrpc++1.51 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libcpp-httplib0.11 libsqlite3-0 zlib1g \
      dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home mantissa
COPY --from=build /src/build/server/mantissad /src/build/client/mantissa /usr/local/bin/
USER mantissa
WORKDIR /home/mantissa
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=5s CMD ["mantissa", "capabilities"]
ENTRYPOINT ["mantissad", "--grpc_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464", \
            "--state_dir=/home/mantissa/state"]
