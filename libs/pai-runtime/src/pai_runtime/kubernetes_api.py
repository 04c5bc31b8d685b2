"""The Kubernetes backend's requests: objects by their API path, pods by label, through the official client.

Every call runs in a thread (`asyncio.to_thread`: the client is synchronous), gives up after
`request_timeout` seconds, and fails as `ApiError` (a `BackendError` with the HTTP status, None when
the server did not answer). Objects go through `CustomObjectsApi`, which addresses any object of a
named API group (`/apis/<group>/<version>/namespaces/<namespace>/<plural>/<name>`); pods through
`CoreV1Api`. The `kubernetes` package is imported, and the client configured, on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pai_runtime.types import BackendError


class ApiError(BackendError):
    """A call to the API server failed; `status` is its HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Where an object is in the API; `str()` is its path below /apis, the handles' `engine_ref`."""

    group: str
    version: str
    plural: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.group}/{self.version}/namespaces/{self.namespace}/{self.plural}/{self.name}"

    @staticmethod
    def parse(ref: str) -> ObjectRef:
        parts = ref.split("/")
        if len(parts) != 6 or parts[2] != "namespaces" or not all(parts):
            raise BackendError(
                f"{ref!r} is not an object reference like <group>/<version>/namespaces/<ns>/<plural>/<name>"
            )
        return ObjectRef(parts[0], parts[1], parts[4], parts[3], parts[5])


def object_ref(
    manifest: Mapping[str, Any], namespace: str, plurals: Mapping[str, str], what: str
) -> tuple[ObjectRef, dict[str, Any]]:
    """Where the manifest's object goes, and the body to create (with its namespace filled in)."""
    if not manifest:
        raise BackendError(f"{what}: the gang has no manifest, the object the Kubernetes backend creates")
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    metadata = manifest.get("metadata")
    if (
        not isinstance(api_version, str)
        or not isinstance(kind, str)
        or not kind
        or not isinstance(metadata, dict)
    ):
        raise BackendError(f"{what}: the manifest needs apiVersion, kind and metadata")
    group, _, version = api_version.rpartition("/")
    if not group or not version:
        raise BackendError(
            f"{what}: {kind} ({api_version}) is in the core API group, which the Kubernetes backend "
            "does not create yet; use an object of a named group (apps/v1, batch/v1, ...)"
        )
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise BackendError(f"{what}: the manifest's metadata has no name")
    body = copy.deepcopy(dict(manifest))
    body["metadata"]["namespace"] = metadata.get("namespace") or namespace
    plural = plurals.get(kind) or kind.lower() + "s"
    return ObjectRef(group, version, plural, body["metadata"]["namespace"], name), body


class KubernetesApi:
    """The few requests the backend makes (see the module's docstring)."""

    def __init__(self, api_client: Any, kubeconfig: str | None, context: str | None, timeout: float) -> None:
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self._context = context
        self.request_timeout = timeout
        self._k8s: Any = None  # the kubernetes package, once imported

    async def create(self, ref: ObjectRef, body: dict[str, Any], what: str) -> None:
        objects = (await self._client()).client.CustomObjectsApi(self._api_client)
        create = objects.create_namespaced_custom_object
        args = (ref.group, ref.version, ref.namespace, ref.plural, body)
        await self._call(what, create, *args, field_validation="Strict")

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object as a JSON document, None if there is none."""
        objects = (await self._client()).client.CustomObjectsApi(self._api_client)
        get = objects.get_namespaced_custom_object
        try:
            obj = await self._call(
                f"cannot read {ref}", get, ref.group, ref.version, ref.namespace, ref.plural, ref.name
            )
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return dict(obj)

    async def pods(self, namespace: str, selector: str, what: str) -> list[dict[str, Any]]:
        """The pods of `namespace` that `selector` selects, as JSON documents (camelCase keys)."""
        core = (await self._client()).client.CoreV1Api(self._api_client)
        found = await self._call(what, core.list_namespaced_pod, namespace, label_selector=selector)
        # JSON documents, whatever the client's model classes look like.
        return list(self._api_client.sanitize_for_serialization(found).get("items") or [])

    async def delete(self, ref: ObjectRef, selector: str, grace: int) -> None:
        """Deletes the object (propagation Foreground), then the pods `selector` selects (none when it
        is "") with `grace` seconds to stop; an object already gone is no error."""
        k8s = await self._client()
        objects = k8s.client.CustomObjectsApi(self._api_client)
        core = k8s.client.CoreV1Api(self._api_client)
        try:
            await self._call(
                f"cannot delete {ref}",
                objects.delete_namespaced_custom_object,
                *(ref.group, ref.version, ref.namespace, ref.plural, ref.name),
                propagation_policy="Foreground",
            )
            if selector:
                await self._call(
                    f"cannot delete the pods of {ref}",
                    core.delete_collection_namespaced_pod,
                    ref.namespace,
                    label_selector=selector,
                    grace_period_seconds=grace,
                )
        except ApiError as e:
            if e.status != 404:
                raise

    async def _client(self) -> Any:
        """The kubernetes package, imported and configured on first use."""
        if self._k8s is None:
            try:
                k8s = importlib.import_module("kubernetes")
            except ImportError as e:
                raise BackendError(
                    "the Kubernetes backend needs the kubernetes package (pip install kubernetes)"
                ) from e
            if self._api_client is None:
                self._api_client = await asyncio.to_thread(self._load_config, k8s)
            self._k8s = k8s
        return self._k8s

    def _load_config(self, k8s: Any) -> Any:
        try:
            if self._kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = k8s.client.Configuration()
                k8s.config.load_incluster_config(client_configuration=configuration)
                return k8s.client.ApiClient(configuration)
            return k8s.config.new_client_from_config(config_file=self._kubeconfig, context=self._context)
        except Exception as e:  # ConfigException, but also OSError, TypeError, ... from a bad file
            raise BackendError(f"cannot configure the Kubernetes client: {e}") from e

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a thread, bounded by `request_timeout`; failures as `ApiError`."""
        k8s = await self._client()
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout, **kwargs)
        except k8s.client.exceptions.ApiException as e:
            raise ApiError(f"{what}: {_api_error(e)}", e.status) from e
        except Exception as e:  # no answer: connection refused, timeout, TLS (urllib3, OSError)
            raise ApiError(f"{what}: {type(e).__name__}: {e}", None) from e


def _api_error(e: Any) -> str:
    """The API server's message from an ApiException, else its status and reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(e.body)
        if isinstance(body, dict) and body.get("message"):
            return f"{e.status} {body.get('reason') or e.reason}: {body['message']}"
    return f"{getattr(e, 'status', '?')} {getattr(e, 'reason', '')}".strip()
