"""Compile-time settings that run the train step as a Vertex AI custom job.

GCPC's ``create_custom_training_job_from_component`` turns a lightweight component into a
custom job, but it gives every replica the same spec and has no Reduction Server pool. This
module builds the ``worker_pool_specs`` ourselves (pool 0 chief, pool 1 workers, pool 2
reducers) and puts them into the component GCPC generates.

With accelerators the training pools run the GPU image (``Dockerfile.gpu``: TensorFlow with
CUDA and NCCL from its own wheels, Google's ``google-reduction-server`` NCCL plugin), set by
:attr:`VertexTrainingConfig.image`. A Reduction Server only serves GPU workers (it takes part
in NCCL all-reduce), so it is refused without accelerators. The reducers appear in
``TF_CONFIG`` as ``ps``; the trainer drops them from the TensorFlow cluster
(:func:`vertex_imbalanced.training.strategy.training_cluster`). The job's CMEK key is not fixed
here: the pipeline wires its ``kms_key`` parameter into the job's ``encryption_spec_key_name``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from vertex_imbalanced.errors import PipelineInputError

REDUCTION_SERVER_IMAGE = "us-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
"""Google's Reduction Server image (pool 2 of a custom job)."""


@dataclasses.dataclass(frozen=True)
class VertexTrainingConfig:
    """How the train step runs on Vertex AI (fixed when the pipeline is compiled).

    Attributes:
        machine_type: machine of every training replica.
        accelerator_type: e.g. ``NVIDIA_TESLA_T4``; empty for CPU only.
        accelerator_count: accelerators per replica (used only with ``accelerator_type``).
        replica_count: training replicas in all (chief + workers). More than one runs
            ``MultiWorkerMirroredStrategy`` (the trainer reads ``TF_CONFIG``).
        reduction_server_count: Reduction Server replicas (pool 2); 0 for none. Needs at
            least two training replicas.
        reduction_server_machine_type: machine of each reducer.
        reduction_server_image: reducer image.
        image: image of the training replicas (pools 0 and 1); empty for the component image
            (the one every step runs in). ``compile.py`` sets the GPU image here when an
            accelerator is set.
        service_account: service account the job runs as; empty for the default one.
        network: VPC network ``projects/<number>/global/networks/<name>``; empty for none.
        boot_disk_size_gb: boot disk of each replica.
        timeout: maximum run time, e.g. ``"86400s"``.
    """

    machine_type: str = "n1-standard-4"
    accelerator_type: str = ""
    accelerator_count: int = 0
    replica_count: int = 1
    reduction_server_count: int = 0
    reduction_server_machine_type: str = "n1-highcpu-16"
    reduction_server_image: str = REDUCTION_SERVER_IMAGE
    image: str = ""
    service_account: str = ""
    network: str = ""
    boot_disk_size_gb: int = 100
    timeout: str = "604800s"

    def __post_init__(self) -> None:
        if self.replica_count < 1:
            raise PipelineInputError(f"replica_count must be >= 1, got {self.replica_count}")
        if self.reduction_server_count < 0:
            raise PipelineInputError(
                f"reduction_server_count must be >= 0, got {self.reduction_server_count}"
            )
        if self.reduction_server_count and self.replica_count < 2:
            raise PipelineInputError(
                "a Reduction Server pool needs at least 2 training replicas "
                f"(replica_count={self.replica_count})"
            )
        if self.reduction_server_count and not self.accelerator_type:
            raise PipelineInputError(
                "a Reduction Server needs GPU workers (it serves NCCL all-reduce): set "
                "--accelerator-type and --accelerator-count, or drop --reduction-server-count"
            )
        if self.accelerator_type and self.accelerator_count < 1:
            raise PipelineInputError(
                f"accelerator_type {self.accelerator_type!r} needs accelerator_count >= 1"
            )
        if self.accelerator_count and not self.accelerator_type:
            raise PipelineInputError("accelerator_count is set but accelerator_type is empty")
        if self.network and not self.network.startswith("projects/"):
            raise PipelineInputError(
                f"network must look like projects/<number>/global/networks/<name>, got {self.network!r}"
            )


def _machine_spec(machine_type: str, accelerator_type: str = "", count: int = 0) -> dict:
    spec: dict[str, Any] = {"machine_type": machine_type}
    if accelerator_type:
        spec["accelerator_type"] = accelerator_type
        spec["accelerator_count"] = count
    return spec


def worker_pool_specs(config: VertexTrainingConfig, container_spec: dict) -> list[dict]:
    """The custom job's ``worker_pool_specs``: chief, workers, then reducers.

    Args:
        config: compile-time training settings.
        container_spec: ``{"image_uri", "command", "args"}`` of the training container
            (``image_uri`` replaced by ``config.image`` when that is set).

    Returns:
        One dict per pool: pool 0 is the chief (1 replica), pool 1 the other
        ``replica_count - 1`` workers (omitted when there are none and no reducers),
        pool 2 the Reduction Server replicas when requested.
    """
    container = copy.deepcopy(container_spec)
    if config.image:
        container["image_uri"] = config.image
    trainer = {
        "machine_spec": _machine_spec(
            config.machine_type, config.accelerator_type, config.accelerator_count
        ),
        "replica_count": 1,
        "container_spec": container,
        "disk_spec": {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": config.boot_disk_size_gb},
    }
    pools = [trainer]
    if config.replica_count > 1:
        workers = copy.deepcopy(trainer)
        workers["replica_count"] = config.replica_count - 1
        pools.append(workers)
    if config.reduction_server_count:
        pools.append(
            {
                "machine_spec": _machine_spec(config.reduction_server_machine_type),
                "replica_count": config.reduction_server_count,
                "container_spec": {"image_uri": config.reduction_server_image},
            }
        )
    return pools


def as_custom_job(component: Any, config: VertexTrainingConfig) -> Any:
    """Wrap a lightweight component so that it runs as a Vertex AI custom job.

    Args:
        component: the ``@dsl.component`` to wrap (the train step).
        config: compile-time settings.

    Returns:
        A component with the same inputs and outputs whose task launches a custom job; its
        extra inputs include ``encryption_spec_key_name`` (the pipeline passes ``kms_key``).
    """
    from google_cloud_pipeline_components.v1.custom_job import (
        create_custom_training_job_from_component,
    )

    wrapped = create_custom_training_job_from_component(
        component,
        display_name=component.component_spec.name,
        replica_count=1,
        machine_type=config.machine_type,
        accelerator_type=config.accelerator_type,
        accelerator_count=config.accelerator_count or 1,
        boot_disk_size_gb=config.boot_disk_size_gb,
        timeout=config.timeout,
        service_account=config.service_account,
        network=config.network,
    )
    pools_input = wrapped.component_spec.inputs["worker_pool_specs"]
    # GCPC fills command/args with the executor placeholders; keep them, redo the pools.
    container_spec = pools_input.default[0]["container_spec"]
    pools_input.default = worker_pool_specs(config, container_spec)
    return wrapped
