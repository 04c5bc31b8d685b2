"""A walk for people (an indented text tree, Graphviz DOT, a Mermaid flowchart) and for OpenLineage
consumers (RunEvent JSON documents, one per job or notebook run)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from urllib.parse import urlparse

from pai.lineage.v1 import lineage_pb2
from pai_lineage.app.lineage import Query

Node = lineage_pb2.LineageNode
Edge = lineage_pb2.LineageEdge
PRODUCER = "https://github.com/pai-dev/pai/tree/main/services/lineage"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
Format = lineage_pb2.RenderLineageRequest
SHAPES = {
    Node.DATASET_VERSION: "cylinder",
    Node.JOB: "box",
    Node.MODEL_VERSION: "component",
    Node.SERVICE_REVISION: "hexagon",
    Node.NOTEBOOK: "note",
    Node.EXTERNAL: "ellipse",
}


def _label(n: lineage_pb2.LineageNode) -> str:
    text = n.display_name or n.name
    return f"{text} (deleted)" if n.deleted else text


def text(q: Query) -> str:
    """The root, then what it came from (`<-`) and what came from it (`->`), one hop per indent."""
    nodes = {n.name: n for n in q.nodes}
    incoming: dict[str, list[lineage_pb2.LineageEdge]] = {}
    outgoing: dict[str, list[lineage_pb2.LineageEdge]] = {}
    for e in q.edges:
        incoming.setdefault(e.target, []).append(e)
        outgoing.setdefault(e.source, []).append(e)
    root = q.root
    lines = [f"{_label(root)}  [{Node.Kind.Name(root.kind)}] {root.name}"]

    def branch(name: str, depth: int, up: bool, expanded: set[str]) -> None:
        """Each node's own branch is printed once per direction; a node reached again (a shared
        ancestor, or a loop) is named with `(see above)`, so the text grows with the graph's edges,
        not with its paths."""
        edges = incoming.get(name, []) if up else outgoing.get(name, [])
        for e in sorted(edges, key=lambda e: e.source if up else e.target):
            other = e.source if up else e.target
            n = nodes.get(other)
            if n is None:
                continue
            arrow = "<-" if up else "->"
            again = " (see above)" if other in expanded else ""
            lines.append(
                f"{'  ' * depth}{arrow} {Edge.Type.Name(e.type)}: {_label(n)}  [{Node.Kind.Name(n.kind)}]{again}"
            )
            if not again:
                expanded.add(other)
                branch(other, depth + 1, up, expanded)

    if incoming.get(root.name):
        lines.append("upstream:")
        branch(root.name, 1, True, {root.name})
    if outgoing.get(root.name):
        lines.append("downstream:")
        branch(root.name, 1, False, {root.name})
    if q.truncated:
        lines.append("(truncated: raise max_depth or max_nodes to see more)")
    return "\n".join(lines) + "\n"


def _dot_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(q: Query) -> str:
    """A Graphviz digraph, left to right with the flow of data; the root drawn bold."""
    ids = {n.name: f"n{i}" for i, n in enumerate(q.nodes)}
    out = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for n in q.nodes:
        label = f"{_label(n)}\n{Node.Kind.Name(n.kind)}"
        style = ', style="bold"' if n.name == q.root.name else (', style="dashed"' if n.deleted else "")
        out.append(
            f"  {ids[n.name]} [label={_dot_quote(label)}, shape={SHAPES.get(n.kind, 'box')}, "
            f"tooltip={_dot_quote(n.name)}{style}];"
        )
    for e in q.edges:
        out.append(f"  {ids[e.source]} -> {ids[e.target]} [label={_dot_quote(Edge.Type.Name(e.type))}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_quote(value: str) -> str:
    return '"' + value.replace('"', "#quot;").replace("\n", "<br/>") + '"'


def mermaid(q: Query) -> str:
    """A Mermaid flowchart, left to right."""
    ids = {n.name: f"n{i}" for i, n in enumerate(q.nodes)}
    out = ["flowchart LR"]
    for n in q.nodes:
        label = _mermaid_quote(f"{_label(n)}\n{Node.Kind.Name(n.kind)}")
        if n.kind == Node.DATASET_VERSION:
            out.append(f"  {ids[n.name]}[({label})]")
        elif n.kind == Node.JOB:
            out.append(f"  {ids[n.name]}[{label}]")
        else:
            out.append(f"  {ids[n.name]}({label})")
    for e in q.edges:
        out.append(f"  {ids[e.source]} -->|{Edge.Type.Name(e.type)}| {ids[e.target]}")
    out.append(f"  style {ids[q.root.name]} stroke-width:3px")
    return "\n".join(out) + "\n"


def render(q: Query, fmt: int) -> tuple[str, str]:
    """(content, media type) in the requested notation; TEXT when unspecified."""
    if fmt == Format.DOT:
        return dot(q), "text/vnd.graphviz"
    if fmt == Format.MERMAID:
        return mermaid(q), "text/vnd.mermaid"
    return text(q), "text/plain"


# ---- OpenLineage ---------------------------------------------------------------------------------

RUN_STATES = {"SUCCEEDED": "COMPLETE", "FAILED": "FAIL", "STOPPED": "ABORT", "STOPPING": "RUNNING"}


def ol_dataset(n: lineage_pb2.LineageNode, default_namespace: str) -> dict[str, object]:
    """An OpenLineage dataset, named by its URI: scheme and authority as namespace, path as name."""
    uri = n.name if n.kind == Node.EXTERNAL else n.attributes.get("uri", "")
    facets: dict[str, object] = {}
    if uri:
        p = urlparse(uri)
        namespace = f"{p.scheme}://{p.netloc}" if p.netloc else f"{p.scheme}://"
        name = p.path or uri
    else:
        namespace, name = default_namespace, n.name
    if n.kind != Node.EXTERNAL:
        facets["pai"] = {
            "_producer": PRODUCER,
            "_schemaURL": "https://pai.dev/schemas/lineage/PaiEntityFacet.json",
            "resource": n.name,
            "kind": Node.Kind.Name(n.kind),
        }
    return {"namespace": namespace, "name": name, "facets": facets}


def openlineage(q: Query, job_namespace: str, workspace: str) -> list[str]:
    """One RunEvent per JOB or NOTEBOOK node: inputs are what it consumed, outputs what it produced."""
    namespace = job_namespace or f"pai/{workspace}"
    nodes = {n.name: n for n in q.nodes}
    events: list[tuple[dt.datetime, str]] = []
    for run in q.nodes:
        if run.kind not in (Node.JOB, Node.NOTEBOOK):
            continue
        inputs = [
            ol_dataset(nodes[e.source], namespace)
            for e in q.edges
            if e.target == run.name and e.type == Edge.CONSUMED_BY and e.source in nodes
        ]
        outputs = [
            ol_dataset(nodes[e.target], namespace)
            for e in q.edges
            if e.source == run.name and e.type == Edge.PRODUCED and e.target in nodes
        ]
        uid = run.attributes.get("uid", "")
        try:
            run_id = str(uuid.UUID(uid))
        except ValueError:
            run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pai:{run.name}"))
        when = q.seen.get(run.name) or run.create_time.ToDatetime(dt.UTC)
        state = run.attributes.get("state", "")
        event = {
            "eventType": RUN_STATES.get(state, "START" if state in ("", "CREATING", "QUEUED") else "RUNNING"),
            "eventTime": when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "run": {"runId": run_id, "facets": {}},
            "job": {"namespace": namespace, "name": run.name.rsplit("/", 1)[1], "facets": {}},
            "inputs": inputs,
            "outputs": outputs,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        }
        events.append((when, json.dumps(event, sort_keys=True)))
    events.sort(key=lambda pair: pair[0])
    return [e for _, e in events]
