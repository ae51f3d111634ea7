# ack-secret-manager controller image.
#
# Build:  make image   (hack/build-image.sh: podman or docker, labels, tag, SBOM), or by hand
#         docker build -t ack-secret-manager:0.1.0 --build-arg VERSION=0.1.0 \
#           --build-arg REVISION="$(git rev-parse HEAD)" .
# Three stages on the same base:
# - build: installs the project from its own metadata (setup.cfg) into a virtualenv without
#   pip, drops what the controller never imports (kubernetes.aio, 68 MB; test suites of
#   dependencies) and precompiles it (a read-only root cannot take .pyc files at run time);
# - rootfs: collects the interpreter, its standard library (without test, idle, tkinter,
#   ensurepip, lib2to3), the shared libraries they and the virtualenv's extension modules
#   load, the CA bundle, /tmp and a passwd entry for uid 65532 (hack/build-image-rootfs.sh);
# - the image: that directory on an empty base. No shell, no package manager, no pip.
# tests/install/test_image.py lints this file with hadolint and runs the build stage's
# install commands (verbatim, with its ENV) into a fresh virtualenv; test_image_podman.py
# builds and runs the image. PIP_NO_CACHE_DIR is an ENV rather than a flag so that the test
# may reuse pip's cache. PIP_CERT (a CA bundle mounted at build time only, never copied into
# a layer) is for build machines behind a TLS-intercepting proxy.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/ack-secret-manager
WORKDIR /src
# Dependencies first, in a layer of their own that a change to the code does not invalidate
# (controller/__init__.py carries the version that setup.cfg reads).
COPY pyproject.toml setup.cfg README.md ./
COPY controller/__init__.py ./controller/
RUN python -m venv --without-pip "$VENV" \
 && python -m pip --python "$VENV/bin/python" install --no-compile --progress-bar off .
COPY controller ./controller
RUN python -m pip --python "$VENV/bin/python" install --no-compile --no-deps --force-reinstall . \
 && site="$(echo "$VENV"/lib/python3*/site-packages)" \
 && rm -rf "$site/kubernetes/aio" "$site/websocket/tests" "$site/certifi/tests" \
 && find "$VENV" -depth -name __pycache__ -type d -exec rm -rf {} + \
 && "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" \
 && "$VENV/bin/ack-secret-manager" --version

FROM ${PYTHON_IMAGE} AS rootfs
COPY --from=build /opt/ack-secret-manager /opt/ack-secret-manager
COPY hack/build-image-rootfs.sh /usr/local/sbin/
RUN sh /usr/local/sbin/build-image-rootfs.sh /rootfs /opt/ack-secret-manager

FROM scratch
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="ack-secret-manager" \
      org.opencontainers.image.description="Keeps Kubernetes Secrets in step with Alibaba Cloud KMS Secrets Manager (ExternalSecret controller)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=rootfs /rootfs/ /
# The commit for --version and build_info; DL3064 reads "SECRET" in the name, nothing secret.
# hadolint ignore=DL3064
ENV PATH=/opt/ack-secret-manager/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ACK_SECRET_MANAGER_COMMIT="${REVISION}"
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["ack-secret-manager"]
