r"""Compile the training pipeline to a Vertex AI Pipelines YAML (no cloud access needed).

    python compile.py                       # -> build/training_pipeline.yaml
    python compile.py --image IMAGE --replica-count 4 --reduction-server-count 2 \
        --accelerator-type NVIDIA_TESLA_T4 --accelerator-count 1

The YAML is validated before it is written: parsed into a ``PipelineSpec`` and loaded with
``aiplatform.PipelineJob`` offline. Nothing is written when validation fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from components.image import PROJECT_IMAGE
from pipelines.vertex_training import VertexTrainingConfig
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.provenance import current_git_commit

PIPELINE_FILE = "training_pipeline.yaml"
_SAMPLE_VALUES = {
    "STRING": "validate",
    "NUMBER_INTEGER": 1,
    "NUMBER_DOUBLE": 1.0,
    "BOOLEAN": False,
    "LIST": [],
    "STRUCT": {},
}


def replace_image(spec: dict[str, Any], old: str, new: str) -> int:
    """Point every executor (and custom-job worker pool) that runs ``old`` at ``new``.

    Args:
        spec: compiled pipeline spec as a dict (changed in place).
        old: the image the components were defined with.
        new: the image to run instead.

    Returns:
        How many places were changed.
    """
    changed = 0
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        container = executor.get("container", {})
        if container.get("image") == old:
            container["image"] = new
            changed += 1
    for component in spec.get("components", {}).values():
        pools = component.get("inputDefinitions", {}).get("parameters", {}).get("worker_pool_specs")
        for pool in (pools or {}).get("defaultValue") or []:
            container = pool.get("container_spec", {})
            if container.get("image_uri") == old:
                container["image_uri"] = new
                changed += 1
    return changed


def required_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """Parameters without a default, each with a sample value of its type (offline check only)."""
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {
        name: _SAMPLE_VALUES[p["parameterType"]]
        for name, p in params.items()
        if "defaultValue" not in p and not p.get("isOptional")
    }


def validate(path: Path) -> None:
    """Check a compiled YAML offline: PipelineSpec parse, then ``aiplatform.PipelineJob``.

    Raises:
        ValueError: if the spec does not parse or the SDK refuses it.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = yaml.safe_load(path.read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    aiplatform.PipelineJob(
        display_name="compile-validation",
        template_path=str(path),
        pipeline_root="gs://compile-validation/root",
        parameter_values=required_parameters(spec),
        project="compile-validation",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )


def compile_pipeline(
    output_dir: str | Path,
    *,
    image: str = PROJECT_IMAGE,
    vertex_training: VertexTrainingConfig | None = None,
) -> list[Path]:
    """Compile, inject the image, validate, then write the YAML atomically.

    Args:
        output_dir: directory the YAML goes to (created if missing).
        image: container image every project component runs in.
        vertex_training: how the train step runs as a Vertex custom job; None runs it as a
            plain pipeline task.

    Returns:
        The paths written.

    Raises:
        PipelineInputError: if the output directory cannot be written.
    """
    from kfp import compiler

    from pipelines.training_pipeline import build_pipeline

    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".compile-", dir=out))
    except OSError as err:
        raise PipelineInputError(f"cannot write to output directory {str(out)!r}: {err}") from err
    try:
        raw = scratch / "raw.yaml"
        commit = current_git_commit()
        compiler.Compiler().compile(
            build_pipeline(vertex_training),
            str(raw),
            pipeline_parameters={"git_commit": commit} if commit else None,
        )
        spec = yaml.safe_load(raw.read_text())
        if image != PROJECT_IMAGE and not replace_image(spec, PROJECT_IMAGE, image):
            raise RuntimeError(f"no executor uses {PROJECT_IMAGE!r}; cannot inject {image!r}")
        final = scratch / PIPELINE_FILE
        final.write_text(yaml.safe_dump(spec, sort_keys=True))
        validate(final)
        target = out / PIPELINE_FILE
        os.replace(final, target)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return [target]


def add_vertex_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the custom-job flags (shared by compile.py and submit.py)."""
    group = parser.add_argument_group("Vertex training (the train step's custom job)")
    default = VertexTrainingConfig()
    group.add_argument("--machine-type", default=default.machine_type)
    group.add_argument("--accelerator-type", default="", help="e.g. NVIDIA_TESLA_T4; empty: CPU")
    group.add_argument("--accelerator-count", type=int, default=0)
    group.add_argument(
        "--replica-count",
        type=int,
        default=1,
        help="training replicas; >1 runs MultiWorkerMirroredStrategy",
    )
    group.add_argument(
        "--reduction-server-count",
        type=int,
        default=0,
        help="Reduction Server replicas (worker pool 2); needs --replica-count >= 2",
    )
    group.add_argument(
        "--reduction-server-machine-type", default=default.reduction_server_machine_type
    )
    group.add_argument("--training-service-account", default="", help="SA the custom job runs as")
    group.add_argument(
        "--training-network", default="", help="projects/NUMBER/global/networks/NAME"
    )
    group.add_argument("--training-kms-key", default="", help="CMEK key for the custom job")
    group.add_argument(
        "--no-custom-job",
        action="store_true",
        help="run train as an ordinary pipeline task instead of a Vertex custom job",
    )


def vertex_training_from_args(args: argparse.Namespace) -> VertexTrainingConfig | None:
    """Build the custom-job settings from parsed flags (None with ``--no-custom-job``)."""
    if args.no_custom_job:
        return None
    return VertexTrainingConfig(
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count or (1 if args.accelerator_type else 0),
        replica_count=args.replica_count,
        reduction_server_count=args.reduction_server_count,
        reduction_server_machine_type=args.reduction_server_machine_type,
        service_account=args.training_service_account,
        network=args.training_network,
        kms_key=args.training_kms_key,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of compile.py."""
    parser = argparse.ArgumentParser(
        description="Compile the training pipeline to a validated Vertex AI Pipelines YAML."
    )
    parser.add_argument(
        "--output-dir", default="build", help="where the YAML goes (default: build)"
    )
    parser.add_argument(
        "--image",
        default=PROJECT_IMAGE,
        help=f"container image of every component (default: {PROJECT_IMAGE})",
    )
    add_vertex_training_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run compile.py; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        paths = compile_pipeline(
            args.output_dir, image=args.image, vertex_training=vertex_training_from_args(args)
        )
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
