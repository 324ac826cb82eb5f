r"""Submit the training pipeline to Vertex AI Pipelines (or schedule it).

    python submit.py --project P --region us-central1 --pipeline-root gs://BUCKET/runs \
        --param source_uri=bq://P.sales.orders --param feature_config=@features.yaml --wait

Compiles the pipeline (or takes ``--template``), checks every ``--param`` against the
template's parameters (name and type), then submits with ``aiplatform.PipelineJob`` and prints
the job's resource name and console URL. ``--dry-run`` prints the request instead of sending it.
A parameter value starting with ``@`` is read from that file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from compile import add_vertex_training_arguments, compile_pipeline, vertex_training_from_args
from components.image import PROJECT_IMAGE
from vertex_imbalanced.errors import PipelineInputError

_GCS_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_DONE_STATES = {
    "PIPELINE_STATE_SUCCEEDED": 0,
    "PIPELINE_STATE_FAILED": 1,
    "PIPELINE_STATE_CANCELLED": 1,
}
_TYPE_WORDS = {
    "STRING": "a string",
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}
# Pipeline parameters that default to a value derived from the submit flags when not given.
_FROM_FLAGS = {
    "registry_uri": lambda a: f"vertex://{a.project}/{a.region}",
}


# ----------------------------------------------------------------------------- parameters
def _convert(name: str, kind: str, value: Any) -> Any:
    """Convert a CLI string (or config value) to the template's parameter type."""
    bad = PipelineInputError(
        f"parameter {name!r} expects {_TYPE_WORDS.get(kind, kind)} ({kind}), got {value!r}"
    )
    if isinstance(value, str) and value.startswith("@"):
        value = Path(value[1:]).read_text()
        if kind in ("STRUCT", "LIST"):
            value = yaml.safe_load(value)
    if kind == "STRING":
        if isinstance(value, Mapping | list):
            return json.dumps(value)
        return str(value)
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise bad
    if kind == "NUMBER_INTEGER":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise bad
    if kind == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind in ("LIST", "STRUCT"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad from None
        expected = list if kind == "LIST" else dict
        if not isinstance(value, expected):
            raise bad
        return value
    raise bad


def template_parameters(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's input parameters: ``{name: {"parameterType", "defaultValue"?...}}``."""
    return template.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def resolve_parameters(
    template: dict[str, Any],
    given: Mapping[str, Any],
    derived: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check names and types of ``given`` against the template; fill ``derived`` defaults.

    Args:
        template: compiled pipeline spec (dict).
        given: values from ``--config`` and ``--param`` (strings or typed values).
        derived: values used for parameters the user did not give (e.g. project).

    Returns:
        The parameter values to send, converted to the template's types.

    Raises:
        PipelineInputError: unknown name, wrong type, or a required parameter missing.
    """
    declared = template_parameters(template)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise PipelineInputError(
            f"unknown pipeline parameter(s) {unknown}; the pipeline takes: {', '.join(sorted(declared))}"
        )
    values = {
        name: _convert(name, declared[name]["parameterType"], value)
        for name, value in given.items()
    }
    for name, value in (derived or {}).items():
        if name in declared and name not in values:
            values[name] = _convert(name, declared[name]["parameterType"], value)
    missing = sorted(
        name
        for name, spec in declared.items()
        if name not in values and "defaultValue" not in spec and not spec.get("isOptional")
    )
    if missing:
        raise PipelineInputError(
            f"missing required pipeline parameter(s) {missing}: pass --param NAME=VALUE"
        )
    return values


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    """Parse ``k=v`` items (each may also be a comma-separated list for labels)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PipelineInputError(f"{what} {item!r} must look like NAME=VALUE")
        out[key.strip()] = value
    return out


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Vertex label rules: lowercase key/value, letters digits ``_`` ``-``, <= 63 chars."""
    for key, value in labels.items():
        if not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
            raise PipelineInputError(
                f"label {key}={value!r} breaks Vertex label rules (lowercase letters, digits, "
                "'_' and '-', at most 63 characters, key starting with a letter)"
            )
    return dict(labels)


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of submit.py."""
    p = argparse.ArgumentParser(
        description="Submit or schedule the training pipeline on Vertex AI."
    )
    p.add_argument("--project", help="Google Cloud project id (required)")
    p.add_argument("--region", default=None, help="Vertex AI region (default: us-central1)")
    p.add_argument("--pipeline-root", help="gs://BUCKET/PATH for pipeline artifacts (required)")
    p.add_argument("--service-account", default=None, help="SA the pipeline job runs as")
    p.add_argument("--network", default=None, help="projects/NUMBER/global/networks/NAME")
    p.add_argument("--kms-key", default=None, help="CMEK key for the pipeline job's resources")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter (repeatable); VALUE @FILE reads a file",
    )
    p.add_argument("--config", help="YAML file: flags (project, region, ...) and 'parameters:'")
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="job labels (repeatable, or comma-separated)",
    )
    p.add_argument("--no-cache", action="store_true", help="disable step caching for this run")
    p.add_argument("--experiment", help="Vertex AI experiment to associate the run with")
    p.add_argument("--schedule", metavar="CRON", help='create a schedule, e.g. "0 3 * * 1"')
    p.add_argument("--schedule-name", default="imbalanced-training-schedule")
    p.add_argument("--wait", action="store_true", help="follow the job; exit 1 unless it succeeds")
    p.add_argument(
        "--poll-seconds", type=float, default=30.0, help="state poll interval for --wait"
    )
    p.add_argument("--template", help="compiled YAML to submit (default: compile now)")
    p.add_argument("--image", default=PROJECT_IMAGE, help="component image when compiling")
    p.add_argument("--display-name", default="imbalanced-training")
    p.add_argument("--job-id", help="pipeline job id (default: generated by the SDK)")
    p.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    p.add_argument("--api-endpoint", help="Vertex API endpoint (http://host:port: local emulator)")
    add_vertex_training_arguments(p)
    return p


_CONFIG_FLAGS = (
    "project",
    "region",
    "pipeline_root",
    "service_account",
    "network",
    "kms_key",
    "experiment",
    "display_name",
    "template",
    "image",
)


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--config`` into ``args`` (flags win); returns the config's ``parameters``."""
    if not args.config:
        return {}
    try:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
    except OSError as err:
        raise PipelineInputError(f"cannot read --config {args.config!r}: {err}") from err
    if not isinstance(data, dict):
        raise PipelineInputError(f"--config {args.config!r} must hold a YAML mapping")
    unknown = set(data) - {*_CONFIG_FLAGS, "parameters", "labels"}
    if unknown:
        raise PipelineInputError(
            f"unknown key(s) {sorted(unknown)} in {args.config}; known: "
            f"{', '.join(sorted({*_CONFIG_FLAGS, 'parameters', 'labels'}))}"
        )
    for key in _CONFIG_FLAGS:
        if key in data and getattr(args, key) in (None, PROJECT_IMAGE if key == "image" else None):
            setattr(args, key, data[key])
    args.config_labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items()}
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise PipelineInputError(f"'parameters' in {args.config} must be a mapping")
    return params


def check_args(args: argparse.Namespace) -> None:
    """Required flags and their formats."""
    if not args.project:
        raise PipelineInputError(
            "missing project: pass --project PROJECT_ID (or 'project:' in --config)"
        )
    if not _PROJECT_RE.match(args.project):
        raise PipelineInputError(f"--project {args.project!r} is not a valid project id")
    args.region = args.region or "us-central1"
    if not args.pipeline_root:
        raise PipelineInputError("missing --pipeline-root gs://BUCKET/PATH")
    if not _GCS_RE.match(args.pipeline_root):
        raise PipelineInputError(
            f"--pipeline-root {args.pipeline_root!r} is not a Cloud Storage URI: use gs://BUCKET/PATH"
        )


# ----------------------------------------------------------------------------- actions
def make_job(args: argparse.Namespace, template_path: Path, values: dict[str, Any], labels: dict):
    """Build the ``aiplatform.PipelineJob`` (no request is sent yet)."""
    from google.cloud import aiplatform

    init: dict[str, Any] = {"project": args.project, "location": args.region}
    credentials = None
    if args.api_endpoint:
        init["api_endpoint"] = args.api_endpoint
        if args.api_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
            init.update(api_transport="rest", credentials=credentials)
    aiplatform.init(**init)
    return aiplatform.PipelineJob(
        display_name=args.display_name,
        template_path=str(template_path),
        job_id=args.job_id,
        pipeline_root=args.pipeline_root,
        parameter_values=values,
        enable_caching=False if args.no_cache else None,
        encryption_spec_key_name=args.kms_key,
        labels=labels or None,
        project=args.project,
        location=args.region,
        credentials=credentials,
    )


def dry_run_request(job: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The request ``submit`` (or ``create_schedule``) would send, as JSON."""
    from google.protobuf import json_format

    resource = job._gca_resource
    if args.service_account:
        resource.service_account = args.service_account
    if args.network:
        resource.network = args.network
    body = json_format.MessageToDict(resource._pb)
    if args.schedule:
        return {
            "method": "CreateSchedule",
            "parent": job._parent,
            "schedule": {
                "displayName": args.schedule_name,
                "cron": args.schedule,
                "maxConcurrentRunCount": "1",
                "createPipelineJobRequest": {"parent": job._parent, "pipelineJob": body},
            },
        }
    return {
        "method": "CreatePipelineJob",
        "parent": job._parent,
        "pipelineJobId": job.job_id,
        "pipelineJob": body,
    }


def follow(job: Any, poll_seconds: float) -> int:
    """Poll the job until it ends, printing state changes; 0 if it succeeded, else 1."""
    last = None
    while True:
        state = job.state.name
        if state != last:
            print(f"{time.strftime('%H:%M:%S')} {job.resource_name}: {state}", flush=True)
            last = state
        if state in _DONE_STATES:
            if _DONE_STATES[state]:
                message = job._gca_resource.error.message or "no error message"
                print(f"error: pipeline job ended {state}: {message}", file=sys.stderr)
            return _DONE_STATES[state]
        time.sleep(poll_seconds)


def run(args: argparse.Namespace) -> int:
    """Do what the parsed flags ask; returns the exit status."""
    given = load_config(args)
    check_args(args)
    given.update(parse_pairs(args.param, "--param"))
    labels_raw = [part for item in args.labels for part in item.split(",") if part]
    labels = check_labels(
        {**getattr(args, "config_labels", {}), **parse_pairs(labels_raw, "--labels")}
    )
    with tempfile.TemporaryDirectory(prefix="submit-") as tmp:
        if args.template:
            template_path = Path(args.template)
            if not template_path.is_file():
                raise PipelineInputError(f"--template {args.template!r} does not exist")
        else:
            # The custom job runs as the pipeline does unless told otherwise.
            args.training_service_account = (
                args.training_service_account or args.service_account or ""
            )
            args.training_network = args.training_network or args.network or ""
            args.training_kms_key = args.training_kms_key or args.kms_key or ""
            [template_path] = compile_pipeline(
                tmp, image=args.image, vertex_training=vertex_training_from_args(args)
            )
        template = yaml.safe_load(template_path.read_text())
        derived = {name: make(args) for name, make in _FROM_FLAGS.items()}
        values = resolve_parameters(template, given, derived)
        job = make_job(args, template_path, values, labels)
        if args.dry_run:
            print(json.dumps(dry_run_request(job, args), indent=2, sort_keys=True))
            return 0
        if args.schedule:
            schedule = job.create_schedule(
                cron=args.schedule,
                display_name=args.schedule_name,
                service_account=args.service_account,
                network=args.network,
            )
            print(f"schedule: {schedule.resource_name}")
            return 0
        job.submit(
            service_account=args.service_account, network=args.network, experiment=args.experiment
        )
        print(f"pipeline job: {job.resource_name}")
        print(f"console: {job._dashboard_uri()}")
        return follow(job, args.poll_seconds) if args.wait else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run submit.py; returns the exit status."""
    args = build_parser().parse_args(argv)
    from google.api_core import exceptions as api_exceptions

    try:
        return run(args)
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (api_exceptions.GoogleAPIError, RuntimeError) as err:
        # Vertex refused a request (permissions, quota, a bad experiment, ...): say which call
        # failed in one line instead of a traceback.
        print(f"error: Vertex AI request failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
