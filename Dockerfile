# The image every pipeline component runs in on Vertex AI (components/image.py: PROJECT_IMAGE).
# Build: make image  (IMAGE=us-docker.pkg.dev/PROJECT/REPO/trainer:TAG make image)
# Then compile with: python compile.py --image $IMAGE
#
# Stage 1 builds the locked environment (pyfarmhash has no wheel: it needs a C++ compiler).
FROM python:3.11-slim AS build
ARG UV_VERSION=0.13.9
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV VIRTUAL_ENV=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN python -m venv /opt/venv
WORKDIR /src
# The exact versions of requirements.lock, nothing resolved at build time. Production only:
# requirements-dev.lock (pytest, ruff, scikit-learn), fakes/, tests/ and bench/ never enter.
COPY requirements.lock ./
RUN uv pip sync --python /opt/venv/bin/python --no-cache requirements.lock
# Then the project itself, without touching the locked dependencies.
COPY pyproject.toml README.md ./
COPY vertex_imbalanced ./vertex_imbalanced
COPY components ./components
COPY pipelines ./pipelines
COPY sql ./sql
RUN uv pip install --python /opt/venv/bin/python --no-cache --no-deps .

# Stage 2: the slim runtime.
FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_BACKEND=tensorflow \
    # glibc allocator churn while streaming record batches (DESIGN.md section 7):
    # 0.8M -> 1.75M rows/s with these set for the process.
    MALLOC_MMAP_THRESHOLD_=268435456 \
    MALLOC_TRIM_THRESHOLD_=536870912 \
    MALLOC_TOP_PAD_=268435456
# KFP lightweight components run `python3 -m kfp.dsl.executor_main`; python3 must be the venv's.
RUN python3 -c "import kfp, vertex_imbalanced, components, pipelines, sql, tensorflow"
WORKDIR /app
