"""LineageService over real gRPC: recording edges by hand, walking, rendering and exporting the graph."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from pai.dlc.v1 import events_pb2 as dlc_events
from pai.dlc.v1 import job_pb2, job_spec_pb2
from pai.lineage.v1 import lineage_pb2

from .conftest import Client, Stack, Watch, fails

pytestmark = pytest.mark.asyncio(loop_scope="module")
L = lineage_pb2
Edge = L.LineageEdge
Node = L.LineageNode
Code = grpc.StatusCode


def edge(
    source: str, source_kind: int, type_: int, target: str, target_kind: int, **kw: object
) -> lineage_pb2.LineageEdge:
    return Edge(
        source=source, source_kind=source_kind, type=type_, target=target, target_kind=target_kind, **kw
    )  # type: ignore[arg-type]


def chain(ws: str) -> list[lineage_pb2.LineageEdge]:
    """raw data -> dataset v1 -> train job -> model v1 -> service revision r1."""
    return [
        edge("s3://raw/crawl", Node.EXTERNAL, Edge.DERIVED_INTO, f"{ws}/datasets/qa/versions/1", Node.DATASET_VERSION),
        edge(f"{ws}/datasets/qa/versions/1", Node.DATASET_VERSION, Edge.CONSUMED_BY, f"{ws}/jobs/train", Node.JOB,
             attributes={"role": "train"}),
        edge(f"{ws}/jobs/train", Node.JOB, Edge.PRODUCED, f"{ws}/models/qa/versions/1", Node.MODEL_VERSION),
        edge(f"{ws}/models/qa/versions/1", Node.MODEL_VERSION, Edge.DEPLOYED_AS, f"{ws}/services/bot/revisions/r1",
             Node.SERVICE_REVISION),
    ]  # fmt: skip


async def record(
    client: Client, ws: str, edges: list[lineage_pb2.LineageEdge], **kw: object
) -> list[lineage_pb2.LineageEdge]:
    reply = await client.lineage.RecordLineage(L.RecordLineageRequest(parent=ws, edges=edges, **kw))  # type: ignore[arg-type]
    return list(reply.edges)


async def test_recording_is_idempotent_and_names_follow_the_relation(
    client: Client, ws: str, stack: Stack, watch: Watch
) -> None:
    first = await record(
        client, ws, chain(ws),
        nodes=[Node(name="s3://raw/crawl", kind=Node.EXTERNAL, display_name="June crawl", attributes={"rows": "9"})],
    )  # fmt: skip
    assert len(first) == 4 and all(e.origin == Edge.API for e in first)
    assert all(e.recorder and e.name.startswith(f"{ws}/lineageEdges/") for e in first)
    again = await record(client, ws, chain(ws)[:2])
    assert [(e.name, e.uid) for e in again] == [(e.name, e.uid) for e in first[:2]]
    await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.lineage_edge.recorded" and e.message.lineage_edge.name == first[3].name
        )
    )  # type: ignore[union-attr]
    recorded = [e for e in watch.events if e.subject == "pai.lineage.lineage_edge.recorded"
                and e.message.lineage_edge.name.startswith(ws + "/")]  # type: ignore[union-attr]  # fmt: skip
    assert len(recorded) == 4  # not again for the existing ones

    got = await client.lineage.GetLineageEdge(L.GetLineageEdgeRequest(name=first[1].name))
    assert (got.source, dict(got.attributes)) == (f"{ws}/datasets/qa/versions/1", {"role": "train"})
    listed = await client.lineage.ListLineageEdges(L.ListLineageEdgesRequest(parent=ws, page_size=3))
    rest = await client.lineage.ListLineageEdges(
        L.ListLineageEdgesRequest(parent=ws, page_size=3, page_token=listed.next_page_token)
    )
    newest_first = sorted(first, key=lambda e: (e.create_time.ToDatetime(), e.name), reverse=True)
    assert [e.name for e in (*listed.lineage_edges, *rest.lineage_edges)] == [e.name for e in newest_first]
    produced = await client.lineage.ListLineageEdges(
        L.ListLineageEdgesRequest(parent=ws, filter="type = PRODUCED AND origin = API")
    )
    assert [e.name for e in produced.lineage_edges] == [first[2].name]

    with_key = await record(
        client,
        ws,
        [edge("s3://a/b", Node.EXTERNAL, Edge.CONSUMED_BY, f"{ws}/jobs/x", Node.JOB)],
        request_id="rec-1",
    )
    assert [
        e.name
        for e in await record(
            client,
            ws,
            [edge("s3://a/b", Node.EXTERNAL, Edge.CONSUMED_BY, f"{ws}/jobs/x", Node.JOB)],
            request_id="rec-1",
        )
    ] == [with_key[0].name]
    async with fails(Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"):
        await record(
            client,
            ws,
            [edge("s3://a/c", Node.EXTERNAL, Edge.CONSUMED_BY, f"{ws}/jobs/x", Node.JOB)],
            request_id="rec-1",
        )
    # the most edges a request may carry, with a key: remembered whole, answered whole again
    many = [
        edge(f"s3://a/part-{i}", Node.EXTERNAL, Edge.CONSUMED_BY, f"{ws}/jobs/x", Node.JOB)
        for i in range(100)
    ]
    first_many = await record(client, ws, many, request_id="rec-many")
    assert [e.name for e in await record(client, ws, many, request_id="rec-many")] == [
        e.name for e in first_many
    ]

    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.lineage.DeleteLineageEdge(
            L.DeleteLineageEdgeRequest(name=with_key[0].name, etag='W/"7"')
        )
    await client.lineage.DeleteLineageEdge(
        L.DeleteLineageEdgeRequest(name=with_key[0].name, etag=with_key[0].etag)
    )
    async with fails(Code.NOT_FOUND, "LINEAGE_EDGE_NOT_FOUND"):
        await client.lineage.GetLineageEdge(L.GetLineageEdgeRequest(name=with_key[0].name))
    async with fails(Code.NOT_FOUND, "LINEAGE_EDGE_NOT_FOUND"):
        await client.lineage.DeleteLineageEdge(L.DeleteLineageEdgeRequest(name=with_key[0].name))
    await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.lineage_edge.deleted"
            and e.message.lineage_edge.name == with_key[0].name
        )
    )  # type: ignore[union-attr]


async def test_bad_edges_are_refused(client: Client, ws: str) -> None:
    await record(client, ws, chain(ws))
    cases = [
        (Code.INVALID_ARGUMENT, "INVALID_EDGE",
         edge(f"{ws}/jobs/train", Node.JOB, Edge.CONSUMED_BY, f"{ws}/jobs/other", Node.JOB)),
        (Code.INVALID_ARGUMENT, "INVALID_EDGE",
         edge("s3://x/y", Node.EXTERNAL, Edge.DERIVED_INTO, "s3://x/y", Node.EXTERNAL)),
        (Code.INVALID_ARGUMENT, "INVALID_EDGE",
         edge(f"{ws}/jobs/train", Node.MODEL_VERSION, Edge.DERIVED_INTO, "s3://x/y", Node.EXTERNAL)),
        (Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH",
         edge("workspaces/elsewhere/datasets/qa/versions/1", Node.DATASET_VERSION, Edge.CONSUMED_BY,
              f"{ws}/jobs/train", Node.JOB)),
        (Code.FAILED_PRECONDITION, "LINEAGE_CYCLE",
         edge(f"{ws}/models/qa/versions/1", Node.MODEL_VERSION, Edge.DERIVED_INTO,
              f"{ws}/datasets/qa/versions/1", Node.DATASET_VERSION)),
    ]  # fmt: skip
    for code, reason, bad in cases:
        async with fails(code, reason):
            await record(client, ws, [bad])
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await record(client, ws, chain(ws)[:1], nodes=[Node(name=f"{ws}/jobs/train", kind=Node.JOB)])
    # a node described as EXTERNAL must be an EXTERNAL end of the request's edges: neither another
    # workspace's entity nor an orphan
    for name in ("workspaces/other/models/m/versions/1", "s3://bucket/not-in-any-edge"):
        async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
            await record(
                client, ws, chain(ws)[:1], nodes=[Node(name=name, kind=Node.EXTERNAL, display_name="x")]
            )
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await client.lineage.RecordLineage(L.RecordLineageRequest(parent=ws))


async def test_queries_walk_by_direction_depth_and_node_limit(client: Client, ws: str) -> None:
    await record(client, ws, chain(ws))
    model = f"{ws}/models/qa/versions/1"
    up = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity=model, direction=L.UPSTREAM)
    )
    assert [(n.name, n.distance) for n in up.nodes] == [
        (model, 0), (f"{ws}/jobs/train", 1), (f"{ws}/datasets/qa/versions/1", 2), ("s3://raw/crawl", 3),
    ]  # fmt: skip
    assert not up.truncated and len(up.edges) == 3
    down = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity=model, direction=L.DOWNSTREAM)
    )
    assert [n.name for n in down.nodes] == [model, f"{ws}/services/bot/revisions/r1"]
    both = await client.lineage.QueryLineage(L.QueryLineageRequest(parent=ws, entity=model))
    assert len(both.nodes) == 5 and len(both.edges) == 4
    short = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity=model, direction=L.UPSTREAM, max_depth=1)
    )
    assert ([n.name for n in short.nodes], short.truncated) == ([model, f"{ws}/jobs/train"], True)
    few = await client.lineage.QueryLineage(L.QueryLineageRequest(parent=ws, entity=model, max_nodes=2))
    assert (len(few.nodes), few.truncated) == (2, True)
    external = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity="s3://raw/crawl", direction=L.DOWNSTREAM)
    )
    assert external.root.kind == Node.EXTERNAL and len(external.nodes) == 5

    async with fails(Code.NOT_FOUND, "LINEAGE_NODE_NOT_FOUND"):
        await client.lineage.QueryLineage(L.QueryLineageRequest(parent=ws, entity=f"{ws}/jobs/never"))
    async with fails(Code.NOT_FOUND, "LINEAGE_NODE_NOT_FOUND"):
        await client.lineage.QueryLineage(
            L.QueryLineageRequest(parent=ws, entity=f"{ws}/models/none/versions/@production")
        )
    async with fails(Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH"):
        await client.lineage.QueryLineage(
            L.QueryLineageRequest(parent=ws, entity="workspaces/other/jobs/train")
        )
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await client.lineage.QueryLineage(L.QueryLineageRequest(parent=ws, entity=model, max_depth=51))


async def test_render_text_dot_and_mermaid(client: Client, ws: str) -> None:
    await record(client, ws, chain(ws))
    model = f"{ws}/models/qa/versions/1"
    text = await client.lineage.RenderLineage(L.RenderLineageRequest(parent=ws, entity=model))
    assert text.media_type == "text/plain"
    lines = text.content.splitlines()
    assert lines[0].startswith("qa:1  [MODEL_VERSION]")
    assert "  <- PRODUCED: train  [JOB]" in lines
    assert "    <- CONSUMED_BY: qa:1  [DATASET_VERSION]" in lines
    assert "  -> DEPLOYED_AS: r1  [SERVICE_REVISION]" in lines
    dot = await client.lineage.RenderLineage(
        L.RenderLineageRequest(parent=ws, entity=model, format=L.RenderLineageRequest.DOT)
    )
    assert dot.media_type == "text/vnd.graphviz"
    assert dot.content.startswith("digraph lineage {") and dot.content.rstrip().endswith("}")
    assert dot.content.count(" -> ") == 4 and 'label="PRODUCED"' in dot.content
    mermaid = await client.lineage.RenderLineage(
        L.RenderLineageRequest(parent=ws, entity=model, format=L.RenderLineageRequest.MERMAID)
    )
    assert mermaid.media_type == "text/vnd.mermaid"
    assert mermaid.content.startswith("flowchart LR") and mermaid.content.count("-->|") == 4


async def test_a_popular_dataset_does_not_cut_a_models_upstream_short(client: Client, ws: str) -> None:
    await record(client, ws, chain(ws))
    data = f"{ws}/datasets/qa/versions/1"
    for batch in range(2):  # 140 other jobs read the same dataset
        await record(client, ws, [
            edge(data, Node.DATASET_VERSION, Edge.CONSUMED_BY, f"{ws}/jobs/other-{batch}-{i}", Node.JOB)
            for i in range(70)
        ])  # fmt: skip
    model = f"{ws}/models/qa/versions/1"
    up = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity=model, direction=L.UPSTREAM, max_depth=5, max_nodes=5)
    )
    assert {n.name for n in up.nodes} == {model, f"{ws}/jobs/train", data, "s3://raw/crawl"}
    assert not up.truncated
    down = await client.lineage.QueryLineage(
        L.QueryLineageRequest(parent=ws, entity=data, direction=L.DOWNSTREAM, max_nodes=5)
    )
    assert len(down.nodes) == 5 and down.truncated


async def test_text_names_a_node_reached_twice_once(client: Client, ws: str) -> None:
    """A diamond: the base model is both the fine-tune job's input and the new version's base."""
    base, tuned, job = f"{ws}/models/qa/versions/1", f"{ws}/models/qa/versions/2", f"{ws}/jobs/tune"
    await record(client, ws, [
        edge("s3://hub/base", Node.EXTERNAL, Edge.DERIVED_INTO, base, Node.MODEL_VERSION),
        edge(base, Node.MODEL_VERSION, Edge.CONSUMED_BY, job, Node.JOB),
        edge(job, Node.JOB, Edge.PRODUCED, tuned, Node.MODEL_VERSION),
        edge(base, Node.MODEL_VERSION, Edge.DERIVED_INTO, tuned, Node.MODEL_VERSION),
    ])  # fmt: skip
    text = await client.lineage.RenderLineage(
        L.RenderLineageRequest(parent=ws, entity=tuned, direction=L.UPSTREAM, max_depth=5)
    )
    lines = text.content.splitlines()
    assert sum("s3://hub/base" in line for line in lines) == 1  # the base's own upstream, printed once
    assert sum("qa:1" in line for line in lines) == 2
    assert sum(line.endswith("(see above)") for line in lines) == 1


async def test_openlineage_run_events_for_jobs(client: Client, ws: str, stack: Stack) -> None:
    await record(client, ws, chain(ws))
    job = job_pb2.Job(
        name=f"{ws}/jobs/train", uid="0b7c6f0e-3f5b-4a8e-9f59-2f7b0d8c1a22", state=job_pb2.Job.SUCCEEDED,
        spec=job_spec_pb2.JobSpec(kind=job_spec_pb2.JobSpec.PYTORCH),
    )  # fmt: skip
    job.update_time.GetCurrentTime()
    await stack.dlc.publish("pai.dlc.job.state_changed", dlc_events.JobStateChanged(job=job))
    for _ in range(200):
        q = await client.lineage.QueryLineage(L.QueryLineageRequest(parent=ws, entity=job.name, max_depth=1))
        if q.root.attributes.get("state") == "SUCCEEDED":
            break
        await asyncio.sleep(0.05)
    reply = await client.lineage.ExportOpenLineage(
        L.ExportOpenLineageRequest(parent=ws, entity=f"{ws}/models/qa/versions/1", direction=L.UPSTREAM)
    )
    assert len(reply.events) == 1
    event = json.loads(reply.events[0])
    assert event["eventType"] == "COMPLETE"
    assert event["run"]["runId"] == job.uid
    assert event["job"] == {"namespace": f"pai/{ws.split('/')[1]}", "name": "train", "facets": {}}
    assert [i["facets"]["pai"]["resource"] for i in event["inputs"]] == [f"{ws}/datasets/qa/versions/1"]
    assert [o["facets"]["pai"]["resource"] for o in event["outputs"]] == [f"{ws}/models/qa/versions/1"]
    assert event["schemaURL"].startswith("https://openlineage.io/spec/") and event["producer"]
    assert event["eventTime"].endswith("Z")
    named = await client.lineage.ExportOpenLineage(
        L.ExportOpenLineageRequest(parent=ws, entity=job.name, job_namespace="marquez-ns")
    )
    assert json.loads(named.events[0])["job"]["namespace"] == "marquez-ns"
