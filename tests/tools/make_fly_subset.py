"""Regenerate tests/fly_openapi_subset.json from the shared Fly references.

The local Fly Machines API server (tests/fly_server.py) validates every request
it receives against this subset. The subset is copied from Fly's published
OpenAPI description (kept in ``../shared/fly/machines-openapi.json`` next to the
repository); this script is the only thing that reads ``../shared``: the tests
read the generated file, which is committed.

Usage::

    python tests/tools/make_fly_subset.py            # rewrite the subset
    python tests/tools/make_fly_subset.py --check    # exit 1 if it is stale
    python tests/tools/make_fly_subset.py --shared /path/to/shared

The copy is verbatim except for the changes listed in ``CHANGES`` and
``ADDITIONS`` below; each is written into the file's ``x-provenance``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fly_openapi_subset.json"
DEFAULT_SHARED = ROOT.parent / "shared"

M = "/v1/apps/{app_name}/machines"
MID = M + "/{machine_id}"

#: The operations the local server implements: path -> methods.
KEEP: dict[str, tuple[str, ...]] = {
    M: ("get", "post"),
    MID: ("get", "post", "delete"),
    MID + "/start": ("post",),
    MID + "/stop": ("post",),
    MID + "/cordon": ("post",),
    MID + "/uncordon": ("post",),
    MID + "/wait": ("get",),
    MID + "/lease": ("get", "post", "delete"),
    MID + "/events": ("get",),
    MID + "/versions": ("get",),
    MID + "/metadata": ("get", "patch"),
    MID + "/metadata/{key}": ("get", "post", "delete"),
}

#: Changes to copied schemas, each justified by the spec's own prose or by
#: machines-api-notes.md. (pointer into the document, old value, new value, why)
CHANGES: list[tuple[tuple[str, ...], Any, Any, str]] = [
    (
        (
            "components",
            "schemas",
            "updateMetadataRequest",
            "properties",
            "metadata",
            "additionalProperties",
        ),
        {"type": "string"},
        {"type": ["string", "null"]},
        "the operation's description (and machines-api-notes §6) says null values remove "
        "keys, but the schema only allowed strings",
    ),
    (
        ("components", "schemas", "fly.MachineService", "properties", "autostop", "type"),
        "string",
        ["string", "boolean"],
        "the field's description says it accepts a string or a boolean (old format) and "
        "that responses still use booleans for off/stop, so a config read back from the "
        "API and sent again carries a boolean",
    ),
    (
        ("components", "schemas", "fly.MachineService", "properties", "autostop", "enum"),
        ["off", "stop", "suspend"],
        ["off", "stop", "suspend", False, True],
        "as for autostop's type: false means off, true means stop",
    ),
    (
        ("paths", MID + "/lease", "post", "requestBody", "required"),
        True,
        False,
        "fly-go AcquireLease/RefreshLease send no body, only ?ttl= (machines-api-notes §5, "
        "§11.2; flyctl-behaviour §4)",
    ),
]

#: Query parameters real clients send that the spec does not declare.
ADDITIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        MID + "/lease",
        "post",
        {
            "name": "ttl",
            "in": "query",
            "description": "seconds the lease will be valid (alternative to the body's ttl)",
            "schema": {"type": "integer"},
            "x-zdd-added": "fly-go AcquireLease/RefreshLease send ?ttl=<seconds> "
            "(machines-api-notes §5, §11.2)",
        },
    ),
    (
        MID,
        "delete",
        {
            "name": "kill",
            "in": "query",
            "description": "fly-go's name for force",
            "schema": {"type": "boolean"},
            "x-zdd-added": "fly-go Destroy sends ?kill=<bool> where SPEC and DOCS say "
            "?force= (machines-api-notes §3, §11.3); the server treats it as force",
        },
    ),
]


def _refs(node: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    """Collect the schema names ``node`` references, transitively."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                prefix = "#/components/schemas/"
                if not isinstance(value, str) or not value.startswith(prefix):
                    raise SystemExit(f"unsupported $ref {value!r}")
                name = value[len(prefix) :]
                if name not in seen:
                    seen.add(name)
                    _refs(schemas[name], schemas, seen)
            else:
                _refs(value, schemas, seen)
    elif isinstance(node, list):
        for value in node:
            _refs(value, schemas, seen)


def _upstream(provenance: str) -> dict[str, str]:
    commit = re.search(r"\b([0-9a-f]{40})\b", provenance)
    repo = re.search(r"`([\w.-]+/[\w.-]+)`", provenance)
    path = re.search(r"`(provider/[^`]+)`", provenance)
    if not (commit and repo and path):
        raise SystemExit(
            "could not read the upstream repository, path and commit from PROVENANCE.md"
        )
    return {"repository": repo.group(1), "path": path.group(1), "commit": commit.group(1)}


def _apply_change(doc: dict[str, Any], pointer: tuple[str, ...], old: Any, new: Any) -> None:
    node = doc
    for key in pointer[:-1]:
        node = node[key]
    if node.get(pointer[-1]) != old:
        raise SystemExit(
            f"the source changed at {'/'.join(pointer)}: expected {old!r}, "
            f"found {node.get(pointer[-1])!r}; review CHANGES"
        )
    node[pointer[-1]] = new


def build(shared: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    source = shared / "fly" / "machines-openapi.json"
    raw = source.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    spec = json.loads(raw)
    provenance_md = (shared / "fly" / "PROVENANCE.md").read_text(encoding="utf-8")
    schemas = spec["components"]["schemas"]

    paths: dict[str, Any] = {}
    kept: list[str] = []
    removed_ops: list[str] = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            label = f"{method.upper()} {path} ({op.get('operationId', '?')})"
            if method in KEEP.get(path, ()):
                paths.setdefault(path, {})[method] = copy.deepcopy(op)
                kept.append(label)
            else:
                removed_ops.append(label)
    missing = [f"{m} {p}" for p, ms in KEEP.items() for m in ms if m not in paths.get(p, {})]
    if missing:
        raise SystemExit(f"operations not found in the source: {missing}")

    names: set[str] = set()
    _refs(paths, schemas, names)
    subset: dict[str, Any] = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "security": spec["security"],
        "paths": paths,
        "components": {
            "schemas": {n: copy.deepcopy(schemas[n]) for n in sorted(names)},
            "securitySchemes": spec["components"]["securitySchemes"],
        },
    }
    for pointer, old, new, _why in CHANGES:
        _apply_change(subset, pointer, old, new)
    for path, method, param in ADDITIONS:
        subset["paths"][path][method].setdefault("parameters", []).append(param)

    copied_on = datetime.date.today().isoformat()
    if previous is not None:
        prev = previous.get("x-provenance", {})
        if prev.get("source_sha256") == sha and prev.get("copied_on"):
            copied_on = prev["copied_on"]  # same source: keep the file byte-identical

    others = sorted(set(schemas) - names)
    subset_with_header = {
        "x-provenance": {
            "source_file": "shared/fly/machines-openapi.json (next to the repository)",
            "source_sha256": sha,
            "upstream": _upstream(provenance_md),
            "upstream_note": (
                "Fly.io's published OpenAPI 3.1 description of the Machines API "
                "(info.license Apache 2.0), converted from YAML to JSON; see "
                "shared/fly/PROVENANCE.md. Live upstream: docs.machines.dev spec/openapi3.json."
            ),
            "copied_on": copied_on,
            "generator": "tests/tools/make_fly_subset.py",
            "kept_operations": kept,
            "kept_schemas": "every schema the kept operations reference, transitively "
            f"({len(names)})",
            "removed": {
                "operations": removed_ops,
                "schemas": f"{len(others)} schemas not referenced by the kept operations",
                "top_level": [k for k in spec if k not in subset and k != "x-provenance"],
            },
            "changed": [
                {"at": "/".join(p), "from": old, "to": new, "why": why}
                for p, old, new, why in CHANGES
            ],
            "added": [
                {"at": f"{p} {m}", "parameter": param["name"], "why": param["x-zdd-added"]}
                for p, m, param in ADDITIONS
            ],
            "not_validated": (
                "responses: the lease endpoints answer the envelope "
                '{"status":"success","data":{...}} seen in DOCS and fly-go, not the flat '
                "Lease schema (machines-api-notes §5)"
            ),
        },
        **subset,
    }
    return subset_with_header


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    previous = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else None
    text = render(build(args.shared, previous))
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
