"""Vertex ML Metadata routes (stores, contexts) for :class:`.fake_vertex.FakeVertex`.

These are the calls ``PipelineJob.submit(experiment="my-exp")`` makes with
``api_transport="rest"`` (google-cloud-aiplatform 1.165), ``{store}`` being
``projects/P/locations/L/metadataStores/default``::

    GET  /v1/{store}                                  404 when absent, then
    POST /v1/projects/P/locations/L/metadataStores?metadataStoreId=default   (an operation,
    GET  /ui/{store}/operations/N                      polled until done), then GET {store}
    GET  /v1/{store}/contexts/my-exp                  404 when absent, then
    POST /v1/{store}/contexts?contextId=my-exp        schemaTitle system.Experiment
    POST /v1/projects/P/locations/L/pipelineJobs      the job itself
    GET  /v1/{store}, GET /v1/{store}/contexts/my-exp (get-or-create again)
    GET  /v1/.../pipelineJobs/ID                       until jobDetail.pipelineRunContext is set
    POST /v1/{store}/contexts/my-exp:addContextChildren   {"childContexts": [run context]}

Usage::

    with FakeVertex() as fake:
        metadata = FakeMetadata.install(fake)
        jobs = FakePipelineJobs.install(fake, metadata=metadata)
"""

from __future__ import annotations

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

_TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."
_STORE = LOCATION_PATH + r"/metadataStores/(?P<store>[^/:]+)"


@dataclasses.dataclass
class FakeMetadata:
    """In-memory MetadataService: metadata stores and contexts.

    Attributes:
        fake: the server the routes are installed on.
        stores: ``{store resource name: MetadataStore JSON}``.
        contexts: ``{context resource name: Context JSON}``; a child lists its parents in
            ``parentContexts`` (as Vertex answers).
    """

    fake: FakeVertex
    stores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def install(cls, fake: FakeVertex) -> FakeMetadata:
        """Create the service and add its routes to ``fake``; returns the service."""
        service = cls(fake=fake)
        contexts = _STORE + r"/contexts"
        context = contexts + r"/(?P<id>[^/:]+)"
        fake.add_route("POST", LOCATION_PATH + r"/metadataStores", service._create_store)
        fake.add_route("GET", _STORE, service._get_store)
        fake.add_route("POST", contexts, service._create_context)
        fake.add_route("GET", context, service._get_context)
        fake.add_route("POST", context + r":addContextChildren", service._add_children)
        return service

    # ------------------------------------------------------------------ helpers for others
    def ensure_store(self, parent: str, store_id: str = "default") -> dict[str, Any]:
        """The store ``{parent}/metadataStores/{store_id}``, created if absent (as pipelines do)."""
        name = f"{parent}/metadataStores/{store_id}"
        if name not in self.stores:
            self.stores[name] = {
                "name": name,
                "createTime": now(),
                "updateTime": now(),
                "state": {"diskUtilizationBytes": "0"},
            }
        return self.stores[name]

    def put_context(
        self,
        store: str,
        context_id: str,
        schema_title: str,
        *,
        display_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        schema_version: str = "0.0.1",
    ) -> dict[str, Any]:
        """Store a context (as the pipeline service or an earlier run would); returns its JSON."""
        if store not in self.stores:
            raise ApiError(404, f"MetadataStore {store} not found")
        if not RESOURCE_ID_RE.match(context_id):
            raise ApiError(400, f"Invalid context id {context_id!r}")
        if not schema_title:
            raise ApiError(400, "context.schema_title is required")
        name = f"{store}/contexts/{context_id}"
        if name in self.contexts:
            raise ApiError(409, f"Context {name} already exists")
        self.contexts[name] = {
            "name": name,
            "displayName": display_name or context_id,
            "etag": "1",
            "labels": {},
            "createTime": now(),
            "updateTime": now(),
            "parentContexts": [],
            "schemaTitle": schema_title,
            "schemaVersion": schema_version,
            "metadata": dict(metadata or {}),
            "description": "",
        }
        return self.contexts[name]

    def children(self, context_name: str) -> list[str]:
        """Names of the contexts whose parent is ``context_name``."""
        return [n for n, c in self.contexts.items() if context_name in c["parentContexts"]]

    # ------------------------------------------------------------------ metadata stores
    def _create_store(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        store_id = query.get("metadataStoreId") or self.fake.new_id()
        if not RESOURCE_ID_RE.match(store_id):
            raise ApiError(400, f"Invalid metadata store id {store_id!r}")
        name = f"{m['parent']}/metadataStores/{store_id}"
        if name in self.stores:
            raise ApiError(409, f"MetadataStore {name} already exists")
        store = self.ensure_store(m["parent"], store_id)
        if body.get("description"):
            store["description"] = body["description"]
        if (body.get("encryptionSpec") or {}).get("kmsKeyName"):
            store["encryptionSpec"] = body["encryptionSpec"]
        response = {"@type": _TYPE_PREFIX + "MetadataStore", **store}
        return 200, self.fake.create_operation(
            name, "CreateMetadataStoreOperationMetadata", response
        )

    def _get_store(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = f"{m['parent']}/metadataStores/{m['store']}"
        if name not in self.stores:
            raise ApiError(404, f"MetadataStore {name} not found")
        return 200, self.stores[name]

    # ------------------------------------------------------------------ contexts
    def _create_context(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        store = f"{m['parent']}/metadataStores/{m['store']}"
        context = self.put_context(
            store,
            query.get("contextId") or self.fake.new_id(),
            body.get("schemaTitle", ""),
            display_name=body.get("displayName"),
            metadata=body.get("metadata"),
            schema_version=body.get("schemaVersion") or "0.0.1",
        )
        context["description"] = body.get("description", "")
        context["labels"] = dict(body.get("labels") or {})
        return 200, context

    def _get_context(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        name = f"{m['parent']}/metadataStores/{m['store']}/contexts/{m['id']}"
        if name not in self.contexts:
            raise ApiError(404, f"Context {name} not found")
        return 200, self.contexts[name]

    def _add_children(self, m: re.Match[str], query: dict, body: dict) -> tuple[int, dict]:
        parent = f"{m['parent']}/metadataStores/{m['store']}/contexts/{m['id']}"
        if parent not in self.contexts:
            raise ApiError(404, f"Context {parent} not found")
        children = list(body.get("childContexts") or [])
        for child in children:
            if child not in self.contexts:
                raise ApiError(404, f"Child context {child} not found")
            if child == parent or child in self._ancestors(parent):
                raise ApiError(400, f"Adding {child} as a child of {parent} creates a cycle")
        for child in children:
            parents = self.contexts[child]["parentContexts"]
            if parent not in parents:
                parents.append(parent)
                self.contexts[child]["updateTime"] = now()
        return 200, {}

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.contexts[name]["parentContexts"])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.contexts.get(current, {}).get("parentContexts", []))
        return seen
