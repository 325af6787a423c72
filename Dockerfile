# GPU image of mantissad and the mantissa CLI: LibTorch 2.x with CUDA from the
# official PyTorch development image, and Debian 12's gRPC, protobuf, Abseil,
# prometheus-cpp, cpp-httplib, SQLite, libpq and zlib, the versions CI builds
# and tests with. Ubuntu 22.04 (under the PyTorch image) ships a gRPC too old for
# the callback API, so Debian's packages are unpacked beside LibTorch, the
# route checked on an H100 with PyTorch 2.11 (see README, "Container").
# The same image runs on CPU nodes with --device=cpu.
#
#   docker build -t mantissa/mantissad:0.1.0 .
#   docker run --gpus all -p 50051:50051 -p 9464:9464 mantissa/mantissad:0.1.0

# PyTorch >= 2.7: its wheels use the C++11 string ABI, as Debian's libraries do.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-devel
# LibTorch brings its own CUDA libraries; the base image adds the variables
# that make the NVIDIA container runtime mount the driver.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04

# Debian 12's packages, downloaded but not installed (their dependencies are
# the glibc and libstdc++ that Ubuntu 22.04 has), and the Fashion-MNIST files
# that --dataset fashion-mnist reads.
FROM debian:12 AS debs
RUN apt-get update -qq \
 && mkdir /debs && cd /debs \
 && apt-get download -qq \
      libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 protobuf-compiler-grpc \
      libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler \
      libabsl-dev libabsl20220623 libre2-9 libre2-dev libc-ares2 libc-ares-dev \
      prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libprometheus-cpp-push1.0 libcivetweb-dev libcivetweb1 civetweb \
      libcurl4-openssl-dev libcurl4 \
      libssl-dev zlib1g-dev libsqlite3-dev libsqlite3-0 libpq-dev libpq5 \
      nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev \
      rapidjson-dev \
 && mkdir /debs-gloo && (cd /debs-gloo && apt-get download -qq libgloo-dev) \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      dataset-fashion-mnist >/dev/null \
 && rm -rf /var/lib/apt/lists/*

FROM ${PYTORCH_IMAGE} AS build
# Debian's libpq5 needs Kerberos and OpenLDAP 2.5: Ubuntu 22.04's have the
# same sonames, and are collected into the runtime image with the rest.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      g++ cmake ninja-build pkg-config libssl3 zlib1g libbrotli1 \
      libgssapi-krb5-2 libldap-2.5-0 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && python -c 'import sys, torch; sys.exit(0 if torch.compiled_with_cxx11_abi() else \
      "torch " + torch.__version__ + " has the pre-C++11 ABI: use PyTorch >= 2.7")'
COPY --from=debs /debs /tmp/debs
COPY --from=debs /debs-gloo /tmp/debs-gloo
# Unpack the packages into /opt/deps, point their pkg-config files (and
# RapidJSON's CMake config) there, and
# link OpenSSL and zlib against the image's shared ones rather than the static
# archives the -dev packages carry (as ../shared/gpu/build.sh does).
RUN set -eu; deps=/opt/deps; lib=$deps/usr/lib/x86_64-linux-gnu; \
    for f in /tmp/debs/*.deb; do dpkg -x "$f" $deps; done; \
    sed -i "s|^prefix=/usr\$|prefix=$deps/usr|" \
      $lib/pkgconfig/*.pc $deps/usr/share/pkgconfig/*.pc; \
    for n in ssl crypto; do \
      rm -f $lib/lib$n.a; ln -sf /usr/lib/x86_64-linux-gnu/lib$n.so.3 $lib/lib$n.so; \
    done; \
    rm -f $lib/libz.a; ln -sf /usr/lib/x86_64-linux-gnu/libz.so.1 $lib/libz.so; \
    sed -i "s|\"/usr/include\"|\"$deps/usr/include\"|" \
      $deps/usr/share/cmake/RapidJSON/RapidJSONConfig.cmake; \
    rm -rf /tmp/debs
# c10d's ProcessGroupGloo header (data-parallel jobs) includes Gloo's headers;
# the library itself is inside libtorch_cpu. Debian's libgloo-dev supplies
# the headers only where the PyTorch package ships none of its own, which
# match its Gloo exactly and are preferred.
RUN set -eu; \
    inc=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))'); \
    if [ ! -f "$inc/gloo/algorithm.h" ]; then dpkg -x /tmp/debs-gloo/libgloo-dev_*.deb /opt/deps; fi; \
    rm -rf /tmp/debs-gloo; \
    test -f "$inc/gloo/algorithm.h" || test -f /opt/deps/usr/include/gloo/algorithm.h
ENV PATH=/opt/deps/usr/bin:$PATH \
    LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu \
    PKG_CONFIG_PATH=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/opt/deps/usr/share/pkgconfig
WORKDIR /src
COPY . .
# The CMake invocation of tests/run_tests.sh, with LibTorch from the PyTorch
# package and the unpacked Debian tree as prefixes; no tests in the image.
RUN torch_prefix=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)') \
 && export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMANTISSA_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/deps/usr" -DPKG_CONFIG_USE_CMAKE_PREFIX_PATH=ON \
 && cmake --build build -j"$(nproc)" --target mantissad mantissa
# Collect what the runtime image needs under /out: the binaries; LibTorch's
# lib/ and the nvidia/ CUDA packages beside it, whole, because LibTorch loads
# parts of CUDA and cuDNN with dlopen and finds them through $ORIGIN-relative
# paths; and every other library ldd resolves (libpq5 for --database and its
# Kerberos, LDAP and SASL libraries among them), except glibc's, which the
# runtime base (the same Ubuntu) has, and the driver's libcuda.so.1, which the
# NVIDIA container runtime mounts.
RUN set -eu; \
    site=$(python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))'); \
    mkdir -p /out/usr/local/bin /out/opt/mantissa/lib /out/opt/mantissa/python/torch; \
    cp build/server/mantissad build/client/mantissa /out/usr/local/bin/; \
    cp -a "$site/torch/lib" /out/opt/mantissa/python/torch/; \
    for d in nvidia torch.libs; do \
      [ ! -d "$site/$d" ] || cp -a "$site/$d" /out/opt/mantissa/python/; \
    done; \
    export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu:$site/torch/lib; \
    missing=$(ldd build/server/mantissad build/client/mantissa | grep 'not found' \
      | grep -v 'libcuda\.so\.1' || true); \
    if [ -n "$missing" ]; then echo "$missing"; exit 1; fi; \
    ldd build/server/mantissad build/client/mantissa \
      | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
      | grep -v -e "^$site/" -e '/ld-linux' \
                -e '/lib\(c\|m\|dl\|rt\|pthread\|resolv\|util\)\.so' \
      | xargs -r cp -L -t /out/opt/mantissa/lib/

FROM ${CUDA_IMAGE}
COPY --from=build /out/ /
COPY --from=debs /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist
# The uid the Kubernetes manifests run as (deploy/k8s/base/statefulset.yaml).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/mantissa mantissa \
 && install -d -o 10001 -g 10001 /var/lib/mantissa
ENV LD_LIBRARY_PATH=/opt/mantissa/lib:/opt/mantissa/python/torch/lib:/usr/local/nvidia/lib64
USER 10001:10001
WORKDIR /var/lib/mantissa
EXPOSE 50051 8000 9464 8080
# Liveness only: capabilities is answered as soon as gRPC is up, also while
# the model repository loads. Readiness is grpc.health.v1, which Kubernetes
# probes natively on the plaintext health port. Over TLS: mount the
# certificate, its key and ca.crt at /etc/mantissa-tls (SAN localhost for
# this check); with --auth_tokens_file, set MANTISSA_TOKEN to a read token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["mantissa", "--server=localhost:50051", "--tls-ca-file=/etc/mantissa-tls/ca.crt", \
       "capabilities"]
# Non-loopback addresses need TLS: mount the certificate and key at
# /etc/mantissa-tls. The job store is SQLite in /var/lib/mantissa; a fleet adds
# --database=postgresql://... and a shared /var/lib/mantissa. Kubernetes
# replaces these with its ConfigMap's --flagfile and the Secret's --database.
ENTRYPOINT ["mantissad", "--grpc_address=0.0.0.0:50051", "--http_address=0.0.0.0:8000", \
            "--metrics_address=0.0.0.0:9464", \
            "--tls_cert_file=/etc/mantissa-tls/tls.crt", \
            "--tls_key_file=/etc/mantissa-tls/tls.key", "--health_address=0.0.0.0:8080", \
            "--state_dir=/var/lib/mantissa", "--drain_seconds=10"]
