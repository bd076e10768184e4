"""A minimal request validator for the OpenAPI subset in fly_openapi_subset.json.

It understands exactly the JSON-schema keywords that subset uses: ``type`` (a
name or a list of names, plus OpenAPI 3.0's ``nullable``), ``properties``,
``required``, ``enum``, ``items``, ``additionalProperties``, ``allOf`` and
``$ref`` to ``#/components/schemas/...``; ``format``, ``description``,
``example``, ``deprecated``, ``title``, ``default`` and ``x-*`` are ignored.
Any other keyword is refused when the validator is built, so a regenerated
subset cannot silently use one it does not check.

Stricter than JSON schema on purpose, to catch a client sending what Fly's
server would not read: a field an object schema does not declare is an error
(unless the schema has ``additionalProperties``), ``null`` is an error unless
the schema allows it, and an integer must be a JSON integer (Go refuses ``1.0``
for an ``int``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OpenAPIChecker", "RequestCheck", "load_subset", "query_bool"]

SUBSET = Path(__file__).with_name("fly_openapi_subset.json")

CHECKED = frozenset(
    {"type", "nullable", "properties", "required", "enum", "items", "additionalProperties"}
    | {"allOf", "$ref"}
)
IGNORED = frozenset({"format", "description", "example", "deprecated", "title", "default"})
_REF = "#/components/schemas/"
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
# Go's strconv.ParseBool, which Fly's server uses for boolean query parameters
_BOOL_TEXT = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def load_subset(path: Path = SUBSET) -> dict[str, Any]:
    """The committed subset (tests never read ../shared)."""
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _walk_schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from _walk_schemas(sub)
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                yield from _walk_schemas(value)
            elif key == "allOf":
                for sub in value:
                    yield from _walk_schemas(sub)


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def _enum_ok(value: Any, allowed: list[Any]) -> bool:
    # type-aware: True must not match 1, nor 1 match 1.0
    return any(type(value) is type(a) and value == a for a in allowed)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _type_ok(value, name):
            return name
    return type(value).__name__


class RequestCheck:
    """The outcome of checking one request: errors, and the parsed body."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.body: Any = None


class OpenAPIChecker:
    """Validates requests against one OpenAPI document (the subset)."""

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        self.spec: Mapping[str, Any] = spec if spec is not None else load_subset()
        self.schemas: Mapping[str, Any] = self.spec["components"]["schemas"]
        for schema in self._all_schemas():
            unknown = {
                k
                for k in schema
                if k not in CHECKED and k not in IGNORED and not k.startswith("x-")
            }
            if unknown:
                raise ValueError(
                    f"schema keywords this validator does not check: {sorted(unknown)}"
                )

    def _all_schemas(self) -> Iterator[dict[str, Any]]:
        for schema in self.schemas.values():
            yield from _walk_schemas(schema)
        for item in self.spec["paths"].values():
            for op in item.values():
                for param in op.get("parameters", ()):
                    yield from _walk_schemas(param.get("schema", {}))
                content = op.get("requestBody", {}).get("content", {})
                for media in content.values():
                    yield from _walk_schemas(media.get("schema", {}))

    # -- schemas -----------------------------------------------------------------

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow ``$ref`` (only to ``#/components/schemas/...``)."""
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith(_REF):
                raise ValueError(f"unsupported $ref {ref!r}")
            schema = self.schemas[ref[len(_REF) :]]
            seen += 1
            if seen > 50:
                raise ValueError(f"$ref loop at {ref!r}")
        return schema

    def _declared(self, schema: Mapping[str, Any]) -> tuple[set[str], Any, bool]:
        """Property names declared by ``schema`` and its ``allOf`` branches,
        the ``additionalProperties`` that applies, and whether it is an object
        schema that lists properties at all."""
        names: set[str] = set()
        additional: Any = None
        lists = False
        for part in [schema, *(self.resolve(s) for s in schema.get("allOf", ()))]:
            if "properties" in part:
                lists = True
                names.update(part["properties"])
            if "additionalProperties" in part:
                additional = part["additionalProperties"]
        return names, additional, lists

    def validate(self, value: Any, schema: Mapping[str, Any], where: str = "body") -> list[str]:
        """Every way ``value`` breaks ``schema`` (empty: valid)."""
        errors: list[str] = []
        self._check(value, schema, where, errors, open_object=False)
        return errors

    def _check(
        self,
        value: Any,
        schema: Mapping[str, Any],
        where: str,
        errors: list[str],
        *,
        open_object: bool,
    ) -> None:
        schema = self.resolve(schema)
        types = schema.get("type")
        names = [types] if isinstance(types, str) else list(types or [])
        if value is None:
            if names and "null" not in names and not schema.get("nullable"):
                errors.append(f"{where}: expected {' or '.join(names)}, got null")
            return
        if names and not any(_type_ok(value, n) for n in names):
            errors.append(f"{where}: expected {' or '.join(names)}, got {_describe(value)}")
            return
        if "enum" in schema and not _enum_ok(value, schema["enum"]):
            errors.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
        for part in schema.get("allOf", ()):
            # the unknown-field check is done once, over the union of the branches
            self._check(value, part, where, errors, open_object=True)
        if isinstance(value, dict):
            self._check_object(value, schema, where, errors, open_object=open_object)
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self._check(item, schema["items"], f"{where}[{i}]", errors, open_object=False)

    def _check_object(
        self,
        value: dict[str, Any],
        schema: Mapping[str, Any],
        where: str,
        errors: list[str],
        *,
        open_object: bool,
    ) -> None:
        props: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{where}: missing required field {name!r}")
        declared, additional, lists = self._declared(schema)
        for key, item in value.items():
            if key in props:
                self._check(item, props[key], f"{where}.{key}", errors, open_object=False)
            elif key in declared:
                continue  # declared by an allOf branch, checked there
            elif isinstance(additional, dict):
                self._check(item, additional, f"{where}.{key}", errors, open_object=False)
            elif additional is True or open_object:
                continue
            elif lists or additional is False:
                errors.append(f"{where}: unknown field {key!r}")

    # -- operations --------------------------------------------------------------

    def operation(self, path_template: str, method: str) -> Mapping[str, Any]:
        return self.spec["paths"][path_template][method.lower()]

    def check_request(
        self,
        path_template: str,
        method: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> RequestCheck:
        """Check query parameters (known, typed, in their enum), required header
        parameters, and the JSON body against the operation's schema."""
        op = self.operation(path_template, method)
        out = RequestCheck()
        params = [p for p in op.get("parameters", ()) if p.get("in") == "query"]
        for key, values in query.items():
            param = self._query_param(params, key)
            if param is None:
                out.errors.append(f"query: unknown parameter {key!r}")
                continue
            for raw in values:
                self._check_query_value(key, raw, param, out.errors)
        lowered = {k.lower() for k in headers}
        for p in op.get("parameters", ()):
            if p.get("in") == "header" and p.get("required") and p["name"].lower() not in lowered:
                out.errors.append(f"header: missing required header {p['name']!r}")
        request_body = op.get("requestBody")
        text = body.strip()
        if not text:
            if request_body is not None and request_body.get("required"):
                out.errors.append("body: a JSON request body is required")
            return out
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            out.errors.append(f"body: not valid JSON ({exc})")
            return out
        out.body = parsed
        if request_body is None:
            if parsed != {}:
                out.errors.append("body: this operation takes no request body")
            return out
        schema = request_body["content"]["application/json"]["schema"]
        out.errors.extend(self.validate(parsed, schema, "body"))
        return out

    @staticmethod
    def _query_param(params: list[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
        for p in params:
            name = p["name"]
            if name == key:
                return p
            if "{" in name:  # templated, e.g. metadata.{key}
                prefix = name[: name.index("{")]
                if key.startswith(prefix) and len(key) > len(prefix):
                    return p
        return None

    @staticmethod
    def _check_query_value(key: str, raw: str, param: Mapping[str, Any], errors: list[str]) -> None:
        schema = param.get("schema", {})
        kind = schema.get("type", "string")
        where = f"query.{key}"
        if kind == "boolean":
            if raw not in _BOOL_TEXT:
                errors.append(f"{where}: expected a boolean, got {raw!r}")
            return
        if kind == "integer":
            try:
                int(raw, 10)
            except ValueError:
                errors.append(f"{where}: expected an integer, got {raw!r}")
            return
        if "enum" in schema:
            # Fly documents repeated or comma-separated values for list-like parameters
            for part in raw.split(","):
                if part not in schema["enum"]:
                    errors.append(f"{where}: {part!r} is not one of {schema['enum']!r}")


def query_bool(raw: str) -> bool:
    """A boolean query value as Fly's server (Go's strconv.ParseBool) reads it."""
    return _BOOL_TEXT[raw]
