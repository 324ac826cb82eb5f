"""Compile the project's pipelines to Vertex AI Pipelines YAML, validated offline.

Every pipeline in :data:`PIPELINES` is compiled the same way (``compile.py`` calls
:func:`compile_pipelines`): KFP compile, the project image injected, the YAML validated offline
(:func:`validate`), then written to ``<output_dir>/<name>.yaml``. All files are written only
after all of them validated, so a failure leaves the output directory as it was.

Images: every step runs ``--image``; with an accelerator the train step's replicas run the GPU
image (``--gpu-image``, default :func:`gpu_image_for` of ``--image``: the tag with ``-gpu``
appended, built from ``Dockerfile.gpu``). The CMEK key (``--kms-key``) becomes the default of
the pipeline parameter ``kms_key``, which reaches the custom job, the split tables and the
registered model at run time (``submit.py --kms-key`` sets the same parameter).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.image import PROJECT_IMAGE
from pipelines.vertex_training import VertexTrainingConfig
from vertex_imbalanced.errors import PipelineInputError, PipelineSpecError
from vertex_imbalanced.registry.provenance import current_git_commit
from vertex_imbalanced.run_parameters import kms_key_problem, yaml_problem

_SAMPLE_VALUES = {
    "STRING": "validate",
    "NUMBER_INTEGER": 1,
    "NUMBER_DOUBLE": 1.0,
    "BOOLEAN": False,
    "LIST": [],
    "STRUCT": {},
}


@dataclasses.dataclass(frozen=True)
class PipelineTarget:
    """One pipeline that ``compile.py`` writes.

    Attributes:
        name: file stem: the YAML is written to ``<output_dir>/<name>.yaml``.
        build: returns the ``@dsl.pipeline`` function, given the train step's custom-job
            settings (None: an ordinary task); a pipeline without a train step ignores them.
    """

    name: str
    build: Callable[[VertexTrainingConfig | None], Any]

    @property
    def file_name(self) -> str:
        """``<name>.yaml``."""
        return f"{self.name}.yaml"


def _build_training_pipeline(vertex_training: VertexTrainingConfig | None) -> Any:
    from pipelines.training_pipeline import build_pipeline

    return build_pipeline(vertex_training)


def _build_batch_prediction_pipeline(vertex_training: VertexTrainingConfig | None) -> Any:
    from pipelines.batch_prediction_pipeline import build_pipeline

    return build_pipeline(vertex_training)


TRAINING = PipelineTarget("training_pipeline", _build_training_pipeline)
BATCH_PREDICTION = PipelineTarget("batch_prediction_pipeline", _build_batch_prediction_pipeline)
PIPELINES: tuple[PipelineTarget, ...] = (TRAINING, BATCH_PREDICTION)
"""The pipelines ``compile.py`` writes, in order (add a new pipeline here)."""


def pipeline_target(name: str) -> PipelineTarget:
    """The entry of :data:`PIPELINES` called ``name``.

    Raises:
        PipelineInputError: no pipeline has that name (the message lists the names).
    """
    for target in PIPELINES:
        if target.name == name:
            return target
    known = ", ".join(t.name for t in PIPELINES)
    raise PipelineInputError(f"unknown pipeline {name!r}; known: {known}")


def replace_image(spec: dict[str, Any], old: str, new: str) -> int:
    """Point every place that runs ``old`` at ``new``.

    The places: executors' containers, custom-job worker pools (the train step), and parameter
    defaults equal to ``old`` (e.g. the batch prediction pipeline's Dataflow worker image), in
    the root and in every component.

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
    for component in [spec.get("root", {}), *spec.get("components", {}).values()]:
        parameters = component.get("inputDefinitions", {}).get("parameters", {})
        for parameter in parameters.values():
            if parameter.get("defaultValue") == old:
                parameter["defaultValue"] = new
                changed += 1
        for pool in (parameters.get("worker_pool_specs") or {}).get("defaultValue") or []:
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


def load_template(path: str | Path) -> dict[str, Any]:
    """Read a compiled pipeline YAML into a dict.

    Raises:
        PipelineSpecError: the file cannot be read, is not YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as err:
        raise PipelineSpecError(f"cannot read pipeline {str(path)!r}: {err}") from err
    except yaml.YAMLError as err:
        raise PipelineSpecError(
            f"pipeline {str(path)!r} is not valid YAML: {yaml_problem(err)}"
        ) from err
    if not isinstance(spec, dict):
        raise PipelineSpecError(f"pipeline {str(path)!r} does not hold a YAML mapping")
    return spec


def validate(path: str | Path) -> None:
    """Check a compiled YAML offline: PipelineSpec parse, then ``aiplatform.PipelineJob``.

    No request is sent: the job object is built with anonymous credentials and sample values
    for the required parameters, which runs the SDK's own checks of the template.

    Args:
        path: the compiled YAML.

    Raises:
        PipelineSpecError: the file cannot be read, does not parse as a ``PipelineSpec``
            (the message names the field), or the SDK refuses it.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = load_template(path)
    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as err:
        raise PipelineSpecError(f"{path} is not a valid PipelineSpec: {err}") from err
    try:
        aiplatform.PipelineJob(
            display_name="compile-validation",
            template_path=str(path),
            pipeline_root="gs://compile-validation/root",
            parameter_values=required_parameters(spec),
            project="compile-validation",
            location="us-central1",
            credentials=AnonymousCredentials(),
        )
    except KeyError as err:
        raise PipelineSpecError(f"{path}: the Vertex AI SDK refuses it: no field {err}") from err
    except (ValueError, TypeError) as err:
        raise PipelineSpecError(f"{path}: the Vertex AI SDK refuses it: {err}") from err


def gpu_image_for(image: str) -> str:
    """The GPU image that goes with a component image: its tag with ``-gpu`` appended.

    ``.../trainer:0.1.0`` -> ``.../trainer:0.1.0-gpu``; an image without a tag gets
    ``:latest-gpu`` (``make image-gpu`` tags ``Dockerfile.gpu``'s build the same way).

    Raises:
        PipelineInputError: ``image`` is pinned by digest (``@sha256:...``), which has no tag
            to derive from: pass ``--gpu-image``.
    """
    if "@" in image:
        raise PipelineInputError(
            f"--image {image!r} is pinned by digest: pass --gpu-image for the GPU replicas"
        )
    name = image.rsplit("/", 1)[-1]
    return f"{image}-gpu" if ":" in name else f"{image}:latest-gpu"


def _compile_one(
    target: PipelineTarget,
    scratch: Path,
    image: str,
    vertex_training: VertexTrainingConfig | None,
    commit: str,
    kms_key: str = "",
) -> Path:
    from kfp import compiler

    raw = scratch / f"{target.name}.raw.yaml"
    pipeline = target.build(vertex_training)
    declared = pipeline.component_spec.inputs or {}
    # The commit and the key become parameter defaults, where the pipeline has the parameter.
    given = {"git_commit": commit, "kms_key": kms_key}
    defaults = {name: value for name, value in given.items() if value and name in declared}
    compiler.Compiler().compile(pipeline, str(raw), pipeline_parameters=defaults or None)
    spec = yaml.safe_load(raw.read_text())
    raw.unlink()
    if image != PROJECT_IMAGE and not replace_image(spec, PROJECT_IMAGE, image):
        raise PipelineSpecError(
            f"{target.name}: no executor uses {PROJECT_IMAGE!r}; cannot inject {image!r}"
        )
    final = scratch / target.file_name
    final.write_text(yaml.safe_dump(spec, sort_keys=True))
    validate(final)
    return final


def compile_pipelines(
    output_dir: str | Path,
    *,
    image: str = PROJECT_IMAGE,
    vertex_training: VertexTrainingConfig | None = None,
    pipelines: Sequence[PipelineTarget] = PIPELINES,
    kms_key: str = "",
) -> list[Path]:
    """Compile, inject the image, validate, then write each pipeline's YAML.

    Args:
        output_dir: directory the YAML files go to (created if missing).
        image: container image every project component runs in.
        vertex_training: how the train step runs as a Vertex custom job; None runs it as a
            plain pipeline task.
        pipelines: which pipelines to compile (default: all of :data:`PIPELINES`).
        kms_key: default of the ``kms_key`` parameter of the pipelines that have one (the
            custom job, split tables and registered model use it; '' = Google-managed).

    Returns:
        The paths written, ``<output_dir>/<name>.yaml`` in the order of ``pipelines``.

    Raises:
        PipelineInputError: the output directory cannot be written.
        PipelineSpecError: a compiled pipeline does not validate; nothing is written then.
    """
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".compile-", dir=out))
    except OSError as err:
        raise PipelineInputError(f"cannot write to output directory {str(out)!r}: {err}") from err
    try:
        commit = current_git_commit()
        compiled = [
            _compile_one(target, scratch, image, vertex_training, commit, kms_key)
            for target in pipelines
        ]
        written = []
        for path in compiled:
            os.replace(path, out / path.name)
            written.append(out / path.name)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return written


def add_vertex_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the custom-job flags (shared by compile.py and submit.py) to ``parser``."""
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
    group.add_argument(
        "--gpu-image",
        default=None,
        help="image of the training replicas when --accelerator-type is set (default: the "
        "--image tag with -gpu appended, e.g. trainer:0.1.0-gpu; built from Dockerfile.gpu)",
    )
    group.add_argument("--training-service-account", default="", help="SA the custom job runs as")
    group.add_argument(
        "--training-network", default="", help="projects/NUMBER/global/networks/NAME"
    )
    group.add_argument(
        "--training-kms-key",
        default="",
        help="deprecated spelling of --kms-key (one key now covers the job, tables and model)",
    )
    group.add_argument(
        "--no-custom-job",
        action="store_true",
        help="run train as an ordinary pipeline task instead of a Vertex custom job",
    )


def kms_key_from_args(args: argparse.Namespace, *, region: str | None = None) -> str:
    """The one CMEK key of ``--kms-key`` and its deprecated spelling ``--training-kms-key``.

    Args:
        args: parsed flags with ``kms_key`` and ``training_kms_key``.
        region: the job's region, when known (the key must be in it).

    Returns:
        The key ('' = none); a warning line on stderr for the deprecated spelling.

    Raises:
        PipelineInputError: the two spellings name different keys, or the key is malformed
            or in another region.
    """
    key, old = args.kms_key or "", args.training_kms_key or ""
    if old:
        print("warning: --training-kms-key is deprecated; use --kms-key", file=sys.stderr)
        if key and key != old:
            raise PipelineInputError(
                f"--training-kms-key {old!r} differs from --kms-key {key!r}: one key covers "
                "the job, the tables and the model; give --kms-key only"
            )
        key = old
    problem = kms_key_problem("--kms-key", key, region)
    if problem:
        raise PipelineInputError(problem)
    return key


def vertex_training_from_args(
    args: argparse.Namespace,
    *,
    service_account: str = "",
    network: str = "",
) -> VertexTrainingConfig | None:
    """The custom-job settings from parsed flags (None with ``--no-custom-job``).

    With ``--accelerator-type`` the training replicas run ``--gpu-image`` (default
    :func:`gpu_image_for` of ``--image``); without it ``--gpu-image`` is refused.

    Args:
        args: flags added by :func:`add_vertex_training_arguments` and ``--image``.
        service_account: used when ``--training-service-account`` is empty.
        network: used when ``--training-network`` is empty.

    Returns:
        The settings, or None when the train step runs as an ordinary task.

    Raises:
        PipelineInputError: settings that do not fit together (see ``VertexTrainingConfig``).
    """
    if args.gpu_image and not args.accelerator_type:
        raise PipelineInputError(
            "--gpu-image is used only with --accelerator-type (CPU replicas run --image)"
        )
    if args.no_custom_job:
        if args.accelerator_type or args.reduction_server_count:
            raise PipelineInputError(
                "--no-custom-job runs train as an ordinary CPU task: drop --accelerator-type "
                "and --reduction-server-count, or the --no-custom-job flag"
            )
        return None
    image = ""
    if args.accelerator_type:
        image = args.gpu_image or gpu_image_for(args.image)
    return VertexTrainingConfig(
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count or (1 if args.accelerator_type else 0),
        replica_count=args.replica_count,
        reduction_server_count=args.reduction_server_count,
        reduction_server_machine_type=args.reduction_server_machine_type,
        image=image,
        service_account=args.training_service_account or service_account,
        network=args.training_network or network,
    )


def one_line(err: BaseException) -> str:
    """An error's message on one line (line breaks become spaces), for the command lines."""
    return " ".join(str(err).split())


def compile_command(args: argparse.Namespace) -> int:
    """What ``compile.py`` does with its parsed flags: compile every pipeline, print the paths.

    A user error (bad flags, an unwritable output directory, a pipeline that does not
    validate) is printed as one line ``error: ...`` on stderr, not a traceback.

    Args:
        args: ``--output-dir``, ``--image``, ``--pipeline`` (names; empty: all of
            :data:`PIPELINES`), ``--kms-key`` and the custom-job flags.

    Returns:
        The exit status: 0 when every YAML was written, 2 on a user error.
    """
    try:
        targets = [pipeline_target(name) for name in args.pipeline] if args.pipeline else PIPELINES
        paths = compile_pipelines(
            args.output_dir,
            image=args.image,
            vertex_training=vertex_training_from_args(args),
            pipelines=targets,
            kms_key=kms_key_from_args(args),
        )
    except PipelineInputError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
