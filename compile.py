r"""Compile the project's pipelines to Vertex AI Pipelines YAML (no cloud access needed).

    python compile.py                       # -> build/training_pipeline.yaml and
                                            #    build/batch_prediction_pipeline.yaml
    python compile.py --pipeline training_pipeline          # only that one
    python compile.py --image IMAGE --replica-count 4 --reduction-server-count 2 \
        --accelerator-type NVIDIA_TESLA_T4 --accelerator-count 1
    python compile.py --kms-key projects/P/locations/us-central1/keyRings/R/cryptoKeys/K

Every step runs ``--image``. With ``--accelerator-type`` the train step's replicas run the GPU
image instead: ``--gpu-image``, by default ``--image``'s tag with ``-gpu`` appended
(``trainer:0.1.0`` -> ``trainer:0.1.0-gpu``, built from ``Dockerfile.gpu``). A Reduction
Server (``--reduction-server-count``) needs GPU replicas and is refused without them.
``--kms-key`` becomes the default of the pipeline parameter ``kms_key`` (the custom job, the
split tables and the registered model); ``submit.py --kms-key`` sets the same parameter.

Each YAML is validated before it is written: parsed into a ``PipelineSpec`` and loaded with
``aiplatform.PipelineJob`` offline. Nothing is written when validation fails; the error is one
line on stderr and the exit status is 2. The logic lives in ``pipelines/compilation.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from components.image import PROJECT_IMAGE
from pipelines.compilation import PIPELINES, add_vertex_training_arguments, compile_command


def build_parser() -> argparse.ArgumentParser:
    """The command line of compile.py."""
    names = ", ".join(t.file_name for t in PIPELINES)
    parser = argparse.ArgumentParser(
        description=f"Compile the pipelines ({names}) to validated Vertex AI Pipelines YAML."
    )
    parser.add_argument(
        "--output-dir", default="build", help="where the YAML goes (default: build)"
    )
    parser.add_argument(
        "--image",
        default=PROJECT_IMAGE,
        help=f"container image of every component (default: {PROJECT_IMAGE})",
    )
    parser.add_argument(
        "--kms-key",
        default="",
        help="Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K): default of the "
        "pipeline parameter kms_key (custom job, split tables, registered model)",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        choices=[t.name for t in PIPELINES],
        help="compile only this pipeline (repeatable; default: all)",
    )
    add_vertex_training_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run compile.py; returns the exit status (0 written, 2 user error)."""
    return compile_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
