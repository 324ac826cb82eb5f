"""PipelineJob and Schedule routes for :class:`fakes.vertex.FakeVertex`.

Usage::

    with FakeVertex() as fake:
        jobs = FakePipelineJobs.install(fake, final_state="PIPELINE_STATE_FAILED")
        ...  # aiplatform.PipelineJob(...).submit() lands in jobs.jobs

Each ``GET`` of a job moves it one step: ``PENDING`` -> ``RUNNING`` (``running_polls`` times)
-> ``final_state``, so a client that waits sees the states a real job goes through. When the job
leaves ``PENDING`` it gets its ``jobDetail`` (``pipelineContext`` / ``pipelineRunContext``, as
Vertex answers); with ``metadata=FakeMetadata.install(fake)`` those contexts are also stored in
the ``default`` metadata store, so ``submit(experiment=...)`` can associate the run.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from fakes.vertex import (
    LOCATION_PATH,
    RESOURCE_ID_RE,
    ApiError,
    FakeVertex,
    now,
)
from fakes.vertex_metadata import FakeMetadata


@dataclasses.dataclass
class FakePipelineJobs:
    """In-memory PipelineJobs and Schedules services.

    Attributes:
        fake: the server the routes are installed on.
        final_state: state a job ends in (``PIPELINE_STATE_SUCCEEDED`` / ``_FAILED`` / ``_CANCELLED``).
        running_polls: how many ``GET``s answer ``PIPELINE_STATE_RUNNING`` before the end.
        error_message: the job's ``error.message`` when it ends failed.
        jobs: ``{resource name: PipelineJob JSON}``.
        schedules: ``{resource name: Schedule JSON}``.
        metadata: where the pipeline and run contexts of started jobs are stored, if anywhere.
    """

    fake: FakeVertex
    final_state: str = "PIPELINE_STATE_SUCCEEDED"
    running_polls: int = 1
    error_message: str = "The DAG failed because some tasks failed: train"
    jobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    metadata: FakeMetadata | None = None
    _polls: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def install(cls, fake: FakeVertex, **settings: Any) -> FakePipelineJobs:
        """Create the service and add its routes to ``fake``; returns the service."""
        service = cls(fake=fake, **settings)
        jobs = LOCATION_PATH + r"/pipelineJobs"
        schedules = LOCATION_PATH + r"/schedules"
        fake.add_route("POST", jobs, service._create_job)
        fake.add_route("GET", jobs + r"/(?P<id>[^/:]+)", service._get_job)
        fake.add_route("POST", jobs + r"/(?P<id>[^/:]+):cancel", service._cancel_job)
        fake.add_route("POST", schedules, service._create_schedule)
        fake.add_route("GET", schedules + r"/(?P<id>[^/:]+)", service._get_schedule)
        return service

    # ------------------------------------------------------------------ pipeline jobs
    def _create_job(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        job_id = query.get("pipelineJobId") or f"pipeline-job-{self.fake.new_id()}"
        if not RESOURCE_ID_RE.match(job_id):
            raise ApiError(400, f"Invalid pipeline job id {job_id!r}")
        name = f"{m['parent']}/pipelineJobs/{job_id}"
        if name in self.jobs:
            raise ApiError(409, f"PipelineJob {name} already exists")
        if not body.get("pipelineSpec"):
            raise ApiError(400, "pipeline_spec is required")
        if not (body.get("runtimeConfig") or {}).get("gcsOutputDirectory"):
            raise ApiError(400, "runtime_config.gcs_output_directory is required")
        job = {
            **body,
            "name": name,
            "state": "PIPELINE_STATE_PENDING",
            "createTime": now(),
            "updateTime": now(),
        }
        self.jobs[name] = job
        self._polls[name] = 0
        return 200, job

    def _get_job(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = f"{m['parent']}/pipelineJobs/{m['id']}"
        job = self.jobs.get(name)
        if job is None:
            raise ApiError(404, f"PipelineJob {name} not found")
        if not job["state"].endswith(("SUCCEEDED", "FAILED", "CANCELLED")):
            if "jobDetail" not in job:
                job["jobDetail"] = self._job_detail(m["parent"], m["id"], job)
            self._polls[name] += 1
            if self._polls[name] <= self.running_polls:
                job["state"] = "PIPELINE_STATE_RUNNING"
                job.setdefault("startTime", now())
            else:
                job["state"] = self.final_state
                job["endTime"] = now()
                if self.final_state == "PIPELINE_STATE_FAILED":
                    job["error"] = {"code": 9, "message": self.error_message}
            job["updateTime"] = now()
        return 200, job

    def _job_detail(self, parent: str, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        """The ``system.Pipeline`` / ``system.PipelineRun`` contexts Vertex makes for a run."""
        store = f"{parent}/metadataStores/default"
        pipeline_id = job["pipelineSpec"].get("pipelineInfo", {}).get("name") or "pipeline"
        contexts = {
            "pipelineContext": (pipeline_id, "system.Pipeline"),
            "pipelineRunContext": (job_id, "system.PipelineRun"),
        }
        detail = {}
        for key, (context_id, schema) in contexts.items():
            name = f"{store}/contexts/{context_id}"
            if self.metadata is None:
                context = {"name": name, "displayName": context_id, "schemaTitle": schema}
            else:
                self.metadata.ensure_store(parent)
                context = self.metadata.contexts.get(name) or self.metadata.put_context(
                    store, context_id, schema
                )
            detail[key] = context
        run, pipeline = detail["pipelineRunContext"], detail["pipelineContext"]["name"]
        run.setdefault("parentContexts", [])
        if pipeline not in run["parentContexts"]:
            run["parentContexts"].append(pipeline)
        return copy.deepcopy(detail)

    def _cancel_job(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = f"{m['parent']}/pipelineJobs/{m['id']}"
        if name not in self.jobs:
            raise ApiError(404, f"PipelineJob {name} not found")
        self.jobs[name]["state"] = "PIPELINE_STATE_CANCELLED"
        return 200, {}

    # ------------------------------------------------------------------ schedules
    def _create_schedule(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        if not body.get("cron"):
            raise ApiError(400, "schedule.cron is required")
        request = body.get("createPipelineJobRequest") or {}
        if not (request.get("pipelineJob") or {}).get("pipelineSpec"):
            raise ApiError(400, "create_pipeline_job_request.pipeline_job is required")
        name = f"{m['parent']}/schedules/{self.fake.new_id()}"
        schedule = {**body, "name": name, "state": "ACTIVE", "createTime": now()}
        self.schedules[name] = schedule
        return 200, schedule

    def _get_schedule(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = f"{m['parent']}/schedules/{m['id']}"
        if name not in self.schedules:
            raise ApiError(404, f"Schedule {name} not found")
        return 200, self.schedules[name]
