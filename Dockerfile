# irisserve serving image (Cloud Run, Kubernetes, plain `docker run`).
#
# Two stages from the same base:
#   build  - installs the pinned training subset, trains and exports the Iris artifact (or, with
#            --build-arg MODEL_DIR=models/NAME/VERSION, takes a packaged artifact from the build
#            context and checks it loads), and assembles the serving virtualenv from the pinned
#            serving requirements;
#   final  - the serving virtualenv and the artifact only: no scikit-learn, no scipy, no pip,
#            no compilers; runs as a non-root user and listens on $PORT (8080) on 0.0.0.0.
#
# The base is a build argument so CI can build offline from a Debian 12 image made with debootstrap
# (scripts/image_test.py); both stages must use the same base because the virtualenv's python is a
# symlink to the base's interpreter.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build

# Empty: train the Iris default. A folder in the build context (what `irisserve package --out` wrote,
# e.g. models/wine/1.0.0): serve that artifact instead.
ARG MODEL_DIR=""

# binutils only to strip debug symbols from extension modules below (uvloop ships 13 MB of them);
# it never reaches the final stage. DL3008 (pin apt versions) is ignored on purpose: the version is
# whatever the base's Debian release carries, and a pin would break the build at its next update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Dependencies before the source, so editing the code does not download them again. Exact pins,
# wheels only; each wheel is downloaded once into /wheels and installed into two virtualenvs:
# /opt/train (serving + training pins) and /opt/venv (serving pins only, copied to the final stage).
COPY requirements.txt requirements-train.txt ./
RUN python3 -m venv /opt/train \
 && /opt/train/bin/pip download --only-binary=:all: --dest /wheels -r requirements-train.txt \
 && /opt/train/bin/pip install --no-index --find-links /wheels -r requirements-train.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt

# The package itself (.dockerignore lets only pyproject.toml, README.md, requirements, src/ and
# models/ in). Its wheel is built once; the build backend (setuptools) lives only in pip's isolated
# build env. A given artifact is loaded once by the serving virtualenv (hashes, ONNX Runtime, warm-up),
# so an artifact that would not serve fails the build, not the first start.
COPY . .
RUN /opt/train/bin/pip wheel --no-deps --wheel-dir /wheels/pkg . \
 && /opt/train/bin/pip install --no-deps --no-index /wheels/pkg/irisserve-*.whl \
 && /opt/venv/bin/pip install --no-deps --no-index /wheels/pkg/irisserve-*.whl \
 && if [ -z "$MODEL_DIR" ]; then \
        /opt/train/bin/irisserve train --out /opt/model; \
    else \
        cp -r "/src/$MODEL_DIR" /opt/model \
        && /opt/venv/bin/python -c "import sys; from irisserve.core.predictor import Predictor; Predictor(sys.argv[1]).load()" /opt/model; \
    fi

# Slim the serving virtualenv (own layers target: <= 160 MB). Not needed to serve: pip and
# setuptools, test suites, type stubs, C headers and static libraries, numpy's f2py/distutils, and
# onnxruntime's offline tools (quantization, transformer optimisers, model converters), which
# `import onnxruntime` never loads. Extension modules lose their debug symbols, except those with
# an RPATH: auditwheel patched those with patchelf, and strip can corrupt patched files.
# Byte-code is compiled with unchecked hashes so it stays valid whatever mtimes the COPY below
# gives the sources, and the read-only container never has to write .pyc files.
RUN /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
           "$site"/onnxruntime/tools "$site"/numpy/distutils "$site"/numpy/f2py \
           "$site"/numpy/_pyinstaller "$site"/numpy/_core/include "$site"/numpy/random/lib \
 && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
 && find /opt/venv -name '*.pyi' -delete \
 && find "$site" -name '*.so' -exec sh -c 'for lib; do \
        readelf --dynamic "$lib" | grep -E "RPATH|RUNPATH" > /dev/null \
        || strip --strip-unneeded "$lib"; done' strip-unpatched {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv

FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="irisserve" \
      org.opencontainers.image.description="A packaged scikit-learn model (Iris by default) served with FastAPI and ONNX Runtime"

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 irisserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin irisserve

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/model /app/model

# IRISSERVE_HOST: the package defaults to loopback; a container must accept outside traffic.
# PORT: Cloud Run sets it; 8080 otherwise. The model directory is absolute so the working
# directory does not matter; the server checks the manifest's SHA-256 hashes before it serves.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IRISSERVE_HOST=0.0.0.0 \
    PORT=8080 \
    IRISSERVE_MODEL_DIR=/app/model

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# For docker/podman (Cloud Run and Kubernetes use their own probes, see deploy/). Python's urllib,
# because the image has no curl; urlopen raises on any non-2xx answer, so 503 means unhealthy.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]

# Exec form: the server is PID 1 and receives SIGTERM itself (uvicorn shuts down gracefully).
STOPSIGNAL SIGTERM
CMD ["irisserve", "serve"]
