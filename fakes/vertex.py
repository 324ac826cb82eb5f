"""A local stand-in for the Vertex AI REST API, for tests and demos without Google Cloud.

Point the SDK at it with::

    aiplatform.init(project="p", location="us-central1", api_endpoint=server.endpoint,
                    api_transport="rest", credentials=AnonymousCredentials())

The server answers the real REST calls of the Model Registry (upload, get, list, listVersions,
mergeVersionAliases, evaluations import/list/get, operations get) with long-running operations
shaped like Vertex's, keeps state in memory, records every request (method, path, query, JSON
body) and can inject error responses or run a callback before a request (another client
acting at that moment). Uploads with ``encryptionSpec`` need a well-formed KMS key in the
model's region, as on Vertex; the key is kept on the stored model resource. Other services
(PipelineJobs...) plug in with :meth:`FakeVertex.add_route`.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import itertools
import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

_TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."
CLASSIFICATION_SCHEMA = (
    "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
)
_ALIAS_RE = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_KMS_KEY_RE = re.compile(
    r"projects/[^/]+/locations/(?P<location>[^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+"
)
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

Handler = Callable[["re.Match[str]", dict[str, str], dict[str, Any]], tuple[int, dict[str, Any]]]


class ApiError(Exception):
    """Raised by a route handler to answer with an error status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]


@dataclasses.dataclass
class _Hook:
    method: str | None
    path_contains: str | None
    callback: Callable[[], None]
    times: int


@dataclasses.dataclass
class _Fault:
    code: int
    times: int
    method: str | None
    path_contains: str | None
    message: str
    after_handling: bool


LOCATION_PATH = r"/v1/(?P<parent>projects/[^/]+/locations/[^/]+)"
"""Route prefix matching ``/v1/projects/P/locations/L`` (group ``parent``)."""
RESOURCE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
"""Ids Vertex accepts for pipeline jobs, metadata stores and contexts."""


def now() -> str:
    """The current time as Vertex writes timestamps (RFC 3339, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    }


def _parse_filter(text: str) -> list[tuple[str, str]]:
    """Parse ``labels.k=v AND display_name="x"`` into (field, value) pairs."""
    terms = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        field, sep, value = part.partition("=")
        if not sep:
            raise ApiError(400, f"Unsupported filter term {part!r}")
        terms.append((field.strip(), value.strip().strip('"')))
    return terms


def _matches(model: dict[str, Any], terms: list[tuple[str, str]]) -> bool:
    for field, value in terms:
        if field.startswith("labels."):
            key = field[len("labels.") :].strip('"')
            if model.get("labels", {}).get(key) != value:
                return False
        elif field in ("display_name", "displayName"):
            if model.get("displayName") != value:
                return False
        else:
            raise ApiError(400, f"Unsupported filter field {field!r}")
    return True


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet."""

    def _handle(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        path = urllib.parse.unquote(parsed.path)
        status, payload = self.server.fake.dispatch(method, path, query, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Answer a GET."""
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        """Answer a POST."""
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        """Answer a PATCH."""
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        """Answer a DELETE."""
        self._handle("DELETE")


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeVertex


class FakeVertex:
    """In-memory Vertex AI REST server on ``127.0.0.1`` (a random free port).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.

    Attributes:
        requests: every request received, in order.
        models: ``{model_id: {version_id: model resource JSON}}``.
        evaluations: ``{"<model_id>@<version_id>": [ModelEvaluation JSON, ...]}``.
        operations: ``{operation name: Operation JSON}``.
        operation_polls: how many ``operations.get`` calls answer ``done: false`` before the
            operation completes (0: the first poll completes it).
    """

    def __init__(self, *, operation_polls: int = 0):
        self.requests: list[RecordedRequest] = []
        self.models: dict[str, dict[str, dict[str, Any]]] = {}
        self.evaluations: dict[str, list[dict[str, Any]]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.operation_polls = operation_polls
        self._polls: dict[str, int] = {}
        self._pending_responses: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._add_model_routes()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeVertex:
        """Start serving in a daemon thread; returns self."""
        self._server = _HttpServer(("127.0.0.1", 0), _RequestHandler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVertex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the value for ``aiplatform.init(api_endpoint=...)``."""
        if self._server is None:
            raise RuntimeError("FakeVertex is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- extension points
    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler(match, query, body) -> (status, json)`` for ``method`` + path regex.

        The pattern is matched against the whole URL path (``re.fullmatch``); routes added
        later win over earlier ones. Raise :class:`ApiError` from a handler to answer an error.
        """
        with self._lock:
            self._routes.insert(0, (method.upper(), re.compile(pattern), handler))

    def inject_error(
        self,
        code: int,
        *,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        message: str = "injected error",
        after_handling: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with HTTP ``code``.

        With ``after_handling`` the request takes effect first (as when a server commits and
        the answer is lost), otherwise it is not handled at all.
        """
        with self._lock:
            self._faults.append(_Fault(code, times, method, path_contains, message, after_handling))

    def before_request(
        self,
        callback: Callable[[], None],
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
    ) -> None:
        """Run ``callback()`` just before the next ``times`` matching requests are handled.

        Models another client acting at that moment (e.g. a concurrent run moving an alias
        between two of our calls); the callback may change the fake's state directly.
        """
        with self._lock:
            self._hooks.append(_Hook(method, path_contains, callback, times))

    def new_id(self) -> str:
        """A fresh numeric resource id (as Vertex uses)."""
        return str(next(self._ids))

    def create_operation(self, name_prefix: str, metadata_type: str, response: dict) -> dict:
        """Create a pending long-running operation under ``name_prefix``; returns its JSON.

        ``response`` must carry an ``@type``; it is returned once the operation is done.
        """
        name = f"{name_prefix}/operations/{self.new_id()}"
        metadata = {
            "@type": _TYPE_PREFIX + metadata_type,
            "genericMetadata": {"createTime": now(), "updateTime": now()},
        }
        with self._lock:
            self.operations[name] = {"name": name, "metadata": metadata, "done": False}
            self._polls[name] = 0
            self._pending_responses[name] = response
        return {"name": name, "metadata": metadata}

    def calls(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        """Recorded requests filtered by method and a substring of the path."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            ]

    # ----------------------------------------------------------------- dispatch
    def dispatch(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Record the request, apply injected faults, then route it."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, body))
            for hook in self._hooks:
                if (
                    hook.times > 0
                    and (hook.method is None or hook.method == method)
                    and (hook.path_contains is None or hook.path_contains in path)
                ):
                    hook.times -= 1
                    hook.callback()
            fault = next(
                (
                    f
                    for f in self._faults
                    if f.times > 0
                    and (f.method is None or f.method == method)
                    and (f.path_contains is None or f.path_contains in path)
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
                if not fault.after_handling:
                    return fault.code, _error_body(fault.code, fault.message)
            answer = self._route(method, path, query, body)
            if fault is not None:
                return fault.code, _error_body(fault.code, fault.message)
            return answer

    def _route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                try:
                    return handler(match, query, body)
                except ApiError as err:
                    return err.code, _error_body(err.code, err.message)
        return 404, _error_body(404, f"No fake route for {method} {path}")

    # ----------------------------------------------------------------- model registry
    def _add_model_routes(self) -> None:
        loc = r"/v1/(?P<parent>projects/[^/]+/locations/[^/]+)"
        model = loc + r"/models/(?P<model>[^/:@]+)(?:@(?P<version>[^/:]+))?"
        self.add_route("GET", r"/(?:v1|ui)/(?P<name>.+/operations/[^/:]+)", self._get_operation)
        self.add_route("POST", loc + r"/models:upload", self._upload)
        self.add_route("GET", loc + r"/models", self._list_models)
        self.add_route("GET", model, self._get_model)
        self.add_route("GET", model + r":listVersions", self._list_versions)
        self.add_route("POST", model + r":mergeVersionAliases", self._merge_aliases)
        self.add_route("POST", model + r"/evaluations:import", self._import_evaluation)
        self.add_route("GET", model + r"/evaluations", self._list_evaluations)
        self.add_route("GET", model + r"/evaluations/(?P<eval>[^/:]+)", self._get_evaluation)

    def _get_operation(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = m["name"]
        op = self.operations.get(name)
        if op is None:
            raise ApiError(404, f"Operation {name} not found")
        if not op["done"]:
            self._polls[name] += 1
            if self._polls[name] > self.operation_polls:
                op["done"] = True
                op["response"] = self._pending_responses.pop(name)
        return 200, op

    def _resolve(self, m: re.Match[str]) -> tuple[str, str, dict[str, Any]]:
        """(model_id, version_id, resource) for ``models/ID[@version-or-alias]``."""
        model_id = m["model"]
        versions = self.models.get(model_id)
        if not versions:
            raise ApiError(404, f"Model {m['parent']}/models/{model_id} not found")
        wanted = m["version"] or "default"
        for version_id, resource in versions.items():
            if wanted == version_id or wanted in resource["versionAliases"]:
                return model_id, version_id, resource
        raise ApiError(404, f"Model {m['parent']}/models/{model_id}@{wanted} not found")

    def _check_aliases(self, aliases: list[str]) -> None:
        for alias in aliases:
            if alias != "default" and not _ALIAS_RE.match(alias.lstrip("-")):
                raise ApiError(400, f"Invalid version alias {alias!r}")

    @staticmethod
    def _check_encryption(encryption: dict[str, Any] | None, parent: str) -> None:
        """CMEK: a well-formed key in the resource's own region (as Vertex requires)."""
        if not encryption:
            return
        key = encryption.get("kmsKeyName", "")
        found = _KMS_KEY_RE.fullmatch(key)
        if not found:
            raise ApiError(400, f"Invalid encryption_spec.kms_key_name {key!r}")
        region = parent.rsplit("/", 1)[-1]
        if found["location"] != region:
            raise ApiError(
                400,
                f"The KMS key {key} is in location {found['location']}, but the resource is "
                f"in {region}: the key must be in the same region as the resource",
            )

    def _claim_alias(self, model_id: str, version_id: str, alias: str) -> None:
        """Put ``alias`` on a version; ``default`` moves, other aliases must be free."""
        for other_id, other in self.models[model_id].items():
            if other_id != version_id and alias in other["versionAliases"]:
                if alias != "default":
                    raise ApiError(
                        400,
                        f"Alias {alias!r} is already used by version {other_id} of model {model_id}",
                    )
                other["versionAliases"].remove(alias)
        resource = self.models[model_id][version_id]
        if alias not in resource["versionAliases"]:
            resource["versionAliases"].append(alias)

    def _upload(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        spec = body.get("model") or {}
        if not spec.get("displayName"):
            raise ApiError(400, "model.display_name is required")
        if len(spec["displayName"]) > 128:
            raise ApiError(400, "model.display_name is longer than 128 characters")
        for key, value in (spec.get("labels") or {}).items():
            if not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
                raise ApiError(400, f"Invalid label {key!r}: {value!r}")
        aliases = list(spec.get("versionAliases") or [])
        self._check_aliases(aliases)
        self._check_encryption(spec.get("encryptionSpec"), m["parent"])
        parent_model = body.get("parentModel")
        if parent_model:
            model_id = parent_model.rsplit("/", 1)[-1]
            if model_id not in self.models:
                raise ApiError(404, f"Parent model {parent_model} not found")
            version_id = str(max(int(v) for v in self.models[model_id]) + 1)
        else:
            model_id = body.get("modelId") or self.new_id()
            version_id = "1"
            self.models[model_id] = {}
            if "default" not in aliases:
                aliases.insert(0, "default")
        name = f"{m['parent']}/models/{model_id}"
        resource = {
            **spec,
            "name": name,
            "versionId": version_id,
            "versionAliases": [],
            "labels": dict(spec.get("labels") or {}),
            "createTime": now(),
            "updateTime": now(),
            "versionCreateTime": now(),
            "versionUpdateTime": now(),
        }
        self.models[model_id][version_id] = resource
        try:
            for alias in aliases:
                self._claim_alias(model_id, version_id, alias)
        except ApiError:
            del self.models[model_id][version_id]
            if not self.models[model_id]:
                del self.models[model_id]
            raise
        response = {
            "@type": _TYPE_PREFIX + "UploadModelResponse",
            "model": name,
            "modelVersionId": version_id,
        }
        return 200, self.create_operation(name, "UploadModelOperationMetadata", response)

    def _list_models(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        terms = _parse_filter(query.get("filter", ""))
        found = []
        for versions in self.models.values():
            default = next(r for r in versions.values() if "default" in r["versionAliases"])
            if default["name"].startswith(m["parent"] + "/") and _matches(default, terms):
                found.append(default)
        return 200, {"models": found}

    def _get_model(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        return 200, self._resolve(m)[2]

    def _list_versions(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        if m["model"] not in self.models:
            raise ApiError(404, f"Model {m['model']} not found")
        terms = _parse_filter(query.get("filter", ""))
        versions = self.models[m["model"]]
        found = [versions[v] for v in sorted(versions, key=int) if _matches(versions[v], terms)]
        return 200, {"models": found}

    def _merge_aliases(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        model_id, version_id, resource = self._resolve(m)
        changes = list(body.get("versionAliases") or [])
        if not changes:
            raise ApiError(400, "version_aliases must not be empty")
        self._check_aliases(changes)
        for change in changes:
            if change.startswith("-"):
                alias = change[1:]
                if alias == "default":
                    raise ApiError(400, "The default alias cannot be removed")
                if alias in resource["versionAliases"]:
                    resource["versionAliases"].remove(alias)
            else:
                self._claim_alias(model_id, version_id, change)
        resource["versionUpdateTime"] = now()
        return 200, resource

    def _import_evaluation(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        model_id, version_id, _ = self._resolve(m)
        evaluation = dict(body.get("modelEvaluation") or {})
        if evaluation.get("metricsSchemaUri") == CLASSIFICATION_SCHEMA:
            problem = classification_metrics_problem(evaluation.get("metrics"))
            if problem:
                raise ApiError(400, f"Invalid Metrics Format: {problem}")
        key = f"{model_id}@{version_id}"
        evaluation["name"] = (
            f"{m['parent']}/models/{model_id}@{version_id}/evaluations/{self.new_id()}"
        )
        evaluation["createTime"] = now()
        self.evaluations.setdefault(key, []).append(evaluation)
        return 200, evaluation

    def _list_evaluations(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        model_id, version_id, _ = self._resolve(m)
        return 200, {"modelEvaluations": self.evaluations.get(f"{model_id}@{version_id}", [])}

    def _get_evaluation(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        model_id, version_id, _ = self._resolve(m)
        for evaluation in self.evaluations.get(f"{model_id}@{version_id}", []):
            if evaluation["name"].endswith("/" + m["eval"]):
                return 200, evaluation
        raise ApiError(404, f"Evaluation {m['eval']} not found")

    # ----------------------------------------------------------------- helpers for tests
    def version(self, model_id: str, alias_or_id: str) -> dict[str, Any] | None:
        """The stored resource of a version by id or alias, or None."""
        for version_id, resource in self.models.get(model_id, {}).items():
            if alias_or_id == version_id or alias_or_id in resource["versionAliases"]:
                return resource
        return None


_CONFIDENCE_FLOATS = frozenset(
    {
        "confidenceThreshold",
        "recall",
        "precision",
        "falsePositiveRate",
        "f1Score",
        "f1ScoreMicro",
        "f1ScoreMacro",
        "recallAt1",
        "precisionAt1",
        "falsePositiveRateAt1",
        "f1ScoreAt1",
    }
)
# int32 / int64 fields of ClassificationEvaluationMetrics.ConfidenceMetrics: proto's JSON parser
# refuses a fractional or non-numeric value for them.
_CONFIDENCE_INTS = frozenset(
    {
        "maxPredictions",
        "truePositiveCount",
        "falsePositiveCount",
        "falseNegativeCount",
        "trueNegativeCount",
    }
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _confusion_matrix_problem(matrix: Any) -> str | None:
    if not isinstance(matrix, dict):
        return "confusionMatrix must be an object"
    unknown = set(matrix) - {"annotationSpecs", "rows"}
    if unknown:
        return f"unknown confusionMatrix fields {sorted(unknown)}"
    specs, rows = matrix.get("annotationSpecs"), matrix.get("rows")
    if not isinstance(specs, list) or not all(
        isinstance(s, dict)
        and set(s) <= {"id", "displayName"}
        and all(isinstance(v, str) for v in s.values())
        for s in specs
    ):
        return "confusionMatrix.annotationSpecs must be a list of {id, displayName} strings"
    if not isinstance(rows, list) or len(rows) != len(specs):
        return "confusionMatrix.rows needs one row per annotation spec"
    for row in rows:
        if not isinstance(row, list) or len(row) != len(specs):
            return "confusionMatrix.rows must be a square list of lists"
        if not all(_is_number(v) for v in row):
            return "confusionMatrix.rows must hold numbers"
    return None


def classification_metrics_problem(metrics: Any) -> str | None:
    """What is wrong with ``metrics`` under Vertex's classification metrics schema, or None.

    Checks what the service's parser of ``ClassificationEvaluationMetrics`` rejects as "Invalid
    Metrics Format": fields the schema does not define (at every level), numbers where numbers
    belong, whole numbers for the integer ``confidenceMetrics`` fields (``*Count``,
    ``maxPredictions``), and confusion matrices of ``annotationSpecs`` (objects with string
    ``id`` / ``displayName``) plus ``rows``, a square list of lists of numbers with one row per
    annotation spec. Written apart from the product's validator on purpose: a fake that reused
    the code under test could not catch its mistakes.
    """
    if not isinstance(metrics, dict):
        return "metrics must be an object"
    allowed = {"auPrc", "auRoc", "logLoss", "confidenceMetrics", "confusionMatrix"}
    unknown = set(metrics) - allowed
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for key in ("auPrc", "auRoc", "logLoss"):
        if key in metrics and not _is_number(metrics[key]):
            return f"{key} must be a number"
    matrices = [metrics.get("confusionMatrix")]
    entries = metrics.get("confidenceMetrics") or []
    if not isinstance(entries, list):
        return "confidenceMetrics must be a list"
    for entry in entries:
        if not isinstance(entry, dict):
            return "confidenceMetrics entries must be objects"
        unknown = set(entry) - _CONFIDENCE_FLOATS - _CONFIDENCE_INTS - {"confusionMatrix"}
        if unknown:
            return f"unknown confidenceMetrics fields {sorted(unknown)}"
        for key, value in entry.items():
            if key in _CONFIDENCE_FLOATS and not _is_number(value):
                return f"confidenceMetrics.{key} must be a number"
            if key in _CONFIDENCE_INTS and not (_is_number(value) and float(value).is_integer()):
                return f"confidenceMetrics.{key} must be an integer, got {value!r}"
        matrices.append(entry.get("confusionMatrix"))
    for matrix in matrices:
        if matrix is not None:
            problem = _confusion_matrix_problem(matrix)
            if problem:
                return problem
    return None
