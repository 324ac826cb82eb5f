# The one image of the project: every pipeline component runs in it on Vertex AI
# (components/image.py: PROJECT_IMAGE), and Dataflow boots it as the SDK container of the batch
# prediction job (--sdk_container_image). One environment for everything: requirements.lock
# holds apache-beam[gcp] 2.77 beside TF / kfp (pyarrow 25.x), so training and scoring run the
# same versions.
#
# Build: make image  (IMAGE=us-docker.pkg.dev/PROJECT/REPO/trainer:TAG make image)
# Then compile with: python compile.py --image $IMAGE
#
# UNVERIFIED BUILD: there is no Docker engine where this project is developed, so this file has
# not been built here. What is checked offline: tests/test_packaging.py (only product paths are
# copied; the wheel's imports are all in requirements.lock) and the same lock installed by
# `make env` (.venv runs the whole test suite with it).
#
# Built on Beam's SDK image so Dataflow can boot it: its ENTRYPOINT /opt/apache/beam/boot
# starts the SDK harness. The Beam version of the image (2.77.0) must equal the one in
# requirements.lock (the job's launcher): the import check below fails the build otherwise.
ARG BEAM_IMAGE=apache/beam_python3.11_sdk:2.77.0

# Stage 1 builds the locked environment (pyfarmhash has no wheel: it needs a C++ compiler).
FROM ${BEAM_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV VIRTUAL_ENV=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
# A venv of the image's own Python (/usr/local/bin/python3.11): exactly the lock, none of the
# packages the base image carries in its system site-packages.
RUN python -m venv /opt/venv
WORKDIR /src
# --compile-bytecode: uv installs no .pyc by default, and every pipeline step is a new
# container, so each would compile TensorFlow's sources again at import (about 10 s of CPU).
# The exact versions of requirements.lock, nothing resolved at build time. Production only:
# requirements-dev.lock (pytest, ruff), fakes/, tests/ and bench/ never enter.
COPY requirements.lock ./
RUN uv pip sync --python /opt/venv/bin/python --no-cache --compile-bytecode requirements.lock
# Then the project itself, without touching the locked dependencies.
COPY pyproject.toml README.md ./
COPY vertex_imbalanced ./vertex_imbalanced
COPY components ./components
COPY pipelines ./pipelines
COPY sql ./sql
RUN uv pip install --python /opt/venv/bin/python --no-cache --compile-bytecode --no-deps . \
 && uv pip check --python /opt/venv/bin/python

# Stage 2: the runtime, the same Beam base (same /usr/local/bin/python3.11 the venv links to).
FROM ${BEAM_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    # Beam's boot creates a fresh venv per worker unless told not to, which would hide /opt/venv;
    # with this set it runs `python -m apache_beam.runners.worker.sdk_worker_main` from PATH.
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_BACKEND=tensorflow \
    # glibc allocator churn while streaming record batches (DESIGN.md section 7):
    # 0.8M -> 1.75M rows/s with these set for the process.
    MALLOC_MMAP_THRESHOLD_=268435456 \
    MALLOC_TRIM_THRESHOLD_=536870912 \
    MALLOC_TOP_PAD_=268435456
# KFP lightweight components run `python3 -m kfp.dsl.executor_main` (their command overrides the
# entrypoint); python3 must be the venv's, and Beam's must match the boot binary's version.
RUN test -x /opt/apache/beam/boot \
 && python3 -c "import sys, apache_beam, kfp, tensorflow, vertex_imbalanced, components, pipelines, sql; \
assert sys.prefix == '/opt/venv', sys.prefix; \
assert apache_beam.__version__ == '2.77.0', apache_beam.__version__"
WORKDIR /app
# ENTRYPOINT stays the base image's /opt/apache/beam/boot (Dataflow's SDK container contract).
