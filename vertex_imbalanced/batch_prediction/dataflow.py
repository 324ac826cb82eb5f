"""Beam pipeline options for a scoring run: DirectRunner locally, Dataflow on Vertex.

Locally the flags name Beam's ``FnApiRunner``, the portable in-process engine that Beam's
``DirectRunner`` runs batch Python pipelines on. Naming ``DirectRunner`` itself would first try
Beam's Prism runner: since Beam 2.60 that downloads a Go binary from GitHub at run time (a
network call, a different engine than the one tested, and without network a wait and a
``beam-temp*`` directory left in the system temp directory on every run).

:class:`DataflowConfig` holds what a Dataflow job needs (region, temp/staging locations,
service account, network, machine type, workers, CMEK key, the project image as the SDK
container); :func:`pipeline_flags` turns it into Beam's command-line flags, so the same options
are what a user would type after ``python -m ...`` and what tests inspect. The image must be
built on Beam's SDK base (``/opt/apache/beam/boot`` as entry point) with this package installed:
``--sdk_location=container`` then tells Dataflow not to install any other SDK on the workers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from vertex_imbalanced.errors import PipelineInputError

_GCS_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}(/.*)?$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+\d+$")
_KMS_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_SA_RE = re.compile(r"^[a-z0-9-]+@[a-z0-9.-]+\.iam\.gserviceaccount\.com$|^[^@\s]+@[^@\s]+$")
_JOB_NAME_RE = re.compile(r"[^a-z0-9-]+")


@dataclasses.dataclass(frozen=True)
class DataflowConfig:
    """Where and how the scoring job runs on Dataflow.

    Attributes:
        project: Google Cloud project of the job.
        region: Dataflow region, e.g. ``us-central1``.
        temp_location: ``gs://`` prefix for Beam's temporary files (and the scoring staging).
        staging_location: ``gs://`` prefix for the job's staged files ('' = temp_location).
        service_account: worker service account e-mail ('' = the Compute Engine default).
        network: VPC network name ('' = default).
        subnetwork: ``regions/REGION/subnetworks/NAME`` or a full URL ('' = none).
        machine_type: worker machine type.
        max_workers: the most workers autoscaling may start.
        kms_key: CMEK key (``projects/../cryptoKeys/..``) for the job's state ('' = Google-managed).
        sdk_container_image: the project image, built on Beam's SDK base.
        no_public_ips: workers without external IPs (needs Private Google Access).
    """

    project: str
    region: str
    temp_location: str
    sdk_container_image: str
    staging_location: str = ""
    service_account: str = ""
    network: str = ""
    subnetwork: str = ""
    machine_type: str = "n1-standard-4"
    max_workers: int = 10
    kms_key: str = ""
    no_public_ips: bool = False

    def __post_init__(self) -> None:
        if not self.project:
            raise PipelineInputError("Dataflow needs a project")
        if not _REGION_RE.match(self.region or ""):
            raise PipelineInputError(f"Dataflow region {self.region!r} is not like us-central1")
        for name in ("temp_location", "staging_location"):
            value = getattr(self, name)
            if (value or name == "temp_location") and not _GCS_RE.match(value or ""):
                raise PipelineInputError(f"Dataflow {name} {value!r} must be gs://BUCKET/PATH")
        if not self.sdk_container_image:
            raise PipelineInputError("Dataflow needs sdk_container_image (the project image)")
        if self.max_workers < 1:
            raise PipelineInputError(f"max_workers must be >= 1, got {self.max_workers}")
        if self.kms_key and not _KMS_RE.match(self.kms_key):
            raise PipelineInputError(
                f"kms_key {self.kms_key!r} must be projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        if self.service_account and not _SA_RE.match(self.service_account):
            raise PipelineInputError(f"service_account {self.service_account!r} is not an e-mail")

    def to_json(self) -> str:
        """JSON text (the pipeline passes the config as one string parameter)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataflowConfig | None:
        """Parse :meth:`to_json` output; ``""`` / ``"{}"`` mean "no Dataflow" (None).

        Raises:
            PipelineInputError: not a JSON object, unknown keys, or invalid values.
        """
        try:
            data: Any = json.loads(text or "{}")
        except json.JSONDecodeError as err:
            raise PipelineInputError(f"dataflow config is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise PipelineInputError("dataflow config must be a JSON object")
        if not data:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineInputError(
                f"unknown dataflow config keys {unknown}; known: {sorted(known)}"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise PipelineInputError(f"dataflow config: {err}") from err


def job_name(run_id: str) -> str:
    """A Dataflow job name from a run id: lowercase letters, digits and '-', <= 63 chars."""
    name = _JOB_NAME_RE.sub("-", f"score-{run_id}".lower()).strip("-")
    return name[:63].rstrip("-")


def pipeline_flags(config: DataflowConfig | None, run_id: str) -> list[str]:
    """Beam flags of the scoring job.

    Args:
        config: Dataflow settings; None runs in this process on Beam's ``FnApiRunner`` (the
            DirectRunner's batch engine, without its Prism download; see the module docstring).
        run_id: the pipeline run (names the Dataflow job; a rerun of the run reuses the name).

    Returns:
        Flags for ``apache_beam.options.pipeline_options.PipelineOptions``.
    """
    if config is None:
        return ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    flags = [
        "--runner=DataflowRunner",
        f"--project={config.project}",
        f"--region={config.region}",
        f"--job_name={job_name(run_id)}",
        f"--temp_location={config.temp_location.rstrip('/')}/beam-temp",
        f"--staging_location={(config.staging_location or config.temp_location).rstrip('/')}/beam-staging",
        f"--sdk_container_image={config.sdk_container_image}",
        "--sdk_location=container",
        f"--machine_type={config.machine_type}",
        f"--max_num_workers={config.max_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--labels=imbalanced_run={job_name(run_id)[:63]}",
    ]
    if config.service_account:
        flags.append(f"--service_account_email={config.service_account}")
    if config.network:
        flags.append(f"--network={config.network}")
    if config.subnetwork:
        flags.append(f"--subnetwork={config.subnetwork}")
    if config.kms_key:
        flags.append(f"--dataflow_kms_key={config.kms_key}")
    if config.no_public_ips:
        flags.append("--no_use_public_ips")
    return flags
