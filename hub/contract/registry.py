"""Client of a Confluent-compatible schema registry (Apicurio's ccompat API or Confluent's)."""

from __future__ import annotations

import json
from typing import Any

import fastavro
import httpx

from hub.contract.envelope import Problem
from hub.contract.schemas import decode_body, split_wire

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY = "BACKWARD_TRANSITIVE"


class RegistryError(Exception):
    """The registry refused a request or could not be reached; the message says which and why."""

    metrics_label = "registry"  # its `error` label in eduhub_stage_errors_total (see hub.core.metrics.error_label)

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, None when the registry was not reached


class RecordError(Exception):
    """A record that can never be processed, whatever the registry's state: dead-letter it with `problem`.

    Rule ids: `record.not_wire_format`, `record.unknown_schema`, `record.avro_decode` (raised by
    `SchemaRegistry.decode_record`); stages add `record.null_key`, `record.invalid_key`,
    `record.project_failed`, `record.encode_failed`, `record.internal_error`.
    """

    def __init__(self, rule: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.problem = Problem(field, rule, message)


def is_transient(exc: RegistryError) -> bool:
    """True when the registry may answer later (unreachable, 5xx, 429): wait and retry, never dead-letter."""
    return exc.status is None or exc.status >= 500 or exc.status == 429


class SchemaRegistry:
    """Async client: register schemas under subjects, fetch schemas by id, decode wire format.

    Example::

        async with SchemaRegistry("http://127.0.0.1:8081/apis/ccompat/v7") as registry:
            schema_id = await registry.register("edu.exam.registration-value", schema_text)
            record = await registry.decode(message.value)
    """

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None, timeout: float = 10.0):
        self.url = url.rstrip("/")
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.AsyncClient(
            base_url=self.url, auth=auth, timeout=timeout, headers={"Accept": CONTENT_TYPE}
        )
        self._by_id: dict[int, Any] = {}

    async def __aenter__(self) -> "SchemaRegistry":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = await self._client.request(
                method,
                path,
                content=None if body is None else json.dumps(body),
                headers={"Content-Type": CONTENT_TYPE} if body is not None else None,
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry at {self.url} is unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("message", response.text)
            except ValueError:
                detail = response.text
            raise RegistryError(f"{method} {path} → HTTP {response.status_code}: {detail}", response.status_code)
        return response.json()

    async def ping(self) -> bool:
        try:
            await self._request("GET", "/subjects")
        except RegistryError:
            return False
        return True

    async def set_compatibility(self, subject: str, level: str = COMPATIBILITY) -> None:
        await self._request("PUT", f"/config/{subject}", {"compatibility": level})

    async def register(self, subject: str, schema_text: str) -> int:
        """Register (or find) the schema under the subject; returns its id. Idempotent."""
        result = await self._request("POST", f"/subjects/{subject}/versions", {"schema": schema_text})
        return int(result["id"])

    async def lookup(self, subject: str, schema_text: str) -> int:
        """Id of a schema already registered under the subject (RegistryError when it is not)."""
        result = await self._request("POST", f"/subjects/{subject}", {"schema": schema_text})
        return int(result["id"])

    async def versions(self, subject: str) -> list[int]:
        return [int(v) for v in await self._request("GET", f"/subjects/{subject}/versions")]

    async def schema_of_version(self, subject: str, version: int) -> str:
        return (await self._request("GET", f"/subjects/{subject}/versions/{version}"))["schema"]

    async def schema_text(self, schema_id: int) -> str:
        return (await self._request("GET", f"/schemas/ids/{schema_id}"))["schema"]

    async def parsed_schema(self, schema_id: int) -> Any:
        """The schema with this id, parsed by fastavro; fetched once, then cached (ids never change)."""
        if schema_id not in self._by_id:
            self._by_id[schema_id] = fastavro.parse_schema(json.loads(await self.schema_text(schema_id)))
        return self._by_id[schema_id]

    async def decode_record(self, value: bytes, reader: tuple[int, Any] | None = None) -> Any:
        """Decode a wire-format value; with `reader` (schema id, parsed schema) resolve it to that schema.

        A record written with an older, compatible schema then reads as the current schema does
        (defaults filled in), so code downstream sees one shape. Raises RecordError for what is wrong
        with the record itself and RegistryError (see `is_transient`) when the registry cannot answer.
        """
        try:
            schema_id, body = split_wire(value)
        except (ValueError, TypeError) as exc:
            raise RecordError("record.not_wire_format", str(exc)) from None
        try:
            writer = await self.parsed_schema(schema_id)
        except RegistryError as exc:
            if exc.status == 404:
                raise RecordError("record.unknown_schema", f"schema id {schema_id} is not in the registry") from None
            raise
        except (ValueError, KeyError, TypeError) as exc:  # the registry holds a schema fastavro cannot parse
            raise RecordError("record.unknown_schema", f"schema id {schema_id} cannot be parsed: {exc}") from None
        try:
            if reader is None or reader[0] == schema_id:
                return decode_body(writer, body)
            return decode_body(writer, body, reader[1])
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, … on hostile bytes
            raise RecordError("record.avro_decode",
                              f"Avro body does not decode with schema id {schema_id}: {type(exc).__name__}: {exc}"
                              ) from None

    async def decode(self, value: bytes) -> Any:
        """Decode a Confluent wire-format value with the writer schema fetched by id."""
        schema_id, body = split_wire(value)
        return decode_body(await self.parsed_schema(schema_id), body)
