# ack-secret-manager controller image.
#
# Build:  docker build -t ack-secret-manager:0.1.0 --build-arg VERSION=0.1.0 \
#           --build-arg REVISION="$(git rev-parse HEAD)" .
# The build stage installs the project from its own metadata (setup.cfg) into a virtualenv
# without pip; the runtime stage copies only that virtualenv onto the same slim base, so no
# compiler, pip, setuptools, wheel or pip cache is left in the image. Runs as uid 65532.
# tests/install/test_image.py lints this file with hadolint and runs the build stage's
# install commands (verbatim, with its ENV) into a fresh virtualenv. PIP_NO_CACHE_DIR is an ENV
# rather than a flag so that the test may reuse pip's cache.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/ack-secret-manager
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY controller ./controller
RUN python -m venv --without-pip "$VENV" \
 && python -m pip --python "$VENV/bin/python" install --no-compile . \
 && "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" \
 && "$VENV/bin/ack-secret-manager" --version

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="ack-secret-manager" \
      org.opencontainers.image.description="Keeps Kubernetes Secrets in step with Alibaba Cloud KMS Secrets Manager (ExternalSecret controller)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The base image's own pip, setuptools and wheel are not needed at run time.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && rm -rf /root/.cache
COPY --from=build /opt/ack-secret-manager /opt/ack-secret-manager
ENV PATH=/opt/ack-secret-manager/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["ack-secret-manager"]
