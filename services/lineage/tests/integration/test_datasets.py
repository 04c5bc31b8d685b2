"""DatasetService over real gRPC, on SQLite and PostgreSQL, with the events it publishes."""

from __future__ import annotations

import hashlib
import pathlib

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pai.lineage.v1 import dataset_pb2, events_pb2, lineage_pb2

from .conftest import Client, Stack, Watch, fails

pytestmark = pytest.mark.asyncio(loop_scope="module")
D = dataset_pb2
Code = grpc.StatusCode


def data_dir(tmp_path: pathlib.Path, name: str = "qa", files: dict[str, str] | None = None) -> pathlib.Path:
    root = tmp_path / name
    root.mkdir(parents=True)
    for rel, text in (files or {"train.jsonl": '{"q": 1}\n', "sub/eval.jsonl": '{"q": 2}\n'}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


async def make(client: Client, ws: str, dataset_id: str = "qa", **kw: object) -> dataset_pb2.Dataset:
    return await client.datasets.CreateDataset(
        D.CreateDatasetRequest(parent=ws, dataset_id=dataset_id, dataset=D.Dataset(**kw))  # type: ignore[arg-type]
    )


async def version(client: Client, parent: str, uri: str, **kw: object) -> dataset_pb2.DatasetVersion:
    return await client.datasets.CreateDatasetVersion(
        D.CreateDatasetVersionRequest(parent=parent, dataset_version=D.DatasetVersion(uri=uri), **kw)  # type: ignore[arg-type]
    )


async def test_create_with_initial_version_computes_the_data_facts_and_publishes(
    client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    root = data_dir(tmp_path)
    ds = await client.datasets.CreateDataset(
        D.CreateDatasetRequest(
            parent=ws,
            dataset_id="qa",
            dataset=D.Dataset(display_name="QA", data_type=D.Dataset.TEXT, format="jsonl"),
            initial_version=D.DatasetVersion(uri=root.as_uri(), description="first crawl"),
        )
    )
    assert ds.name == f"{ws}/datasets/qa"
    assert ds.latest_version == f"{ws}/datasets/qa/versions/1"
    assert ds.version_count == 1
    assert ds.creator and ds.uid and ds.etag
    v = await client.datasets.GetDatasetVersion(D.GetDatasetVersionRequest(name=ds.latest_version))
    assert (v.size_bytes, v.file_count, v.state) == (18, 2, D.DatasetVersion.ACTIVE)
    digest = hashlib.sha256()
    for rel in ("sub/eval.jsonl", "train.jsonl"):
        content = (root / rel).read_bytes()
        digest.update(f"{rel}\0{len(content)}\0".encode() + content)
    assert v.checksum == f"sha256:{digest.hexdigest()}"
    assert v.description == "first crawl"
    created = await watch.wait_for(
        lambda e: e.subject == "pai.lineage.dataset.created" and ws in e.message.dataset.name
    )  # type: ignore[union-attr]
    assert isinstance(created.message, events_pb2.DatasetCreated)
    assert created.message.dataset.latest_version == ds.latest_version
    registered = await watch.wait_for(
        lambda e: e.subject == "pai.lineage.dataset_version.created" and ws in e.message.dataset_version.name
    )  # type: ignore[union-attr]
    assert registered.message.dataset_version.checksum == v.checksum  # type: ignore[union-attr]


async def test_version_ids_count_up_past_chosen_ones_and_latest_skips_archived(
    client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    ds = await make(client, ws)
    uri = data_dir(tmp_path).as_uri()
    v1 = await version(client, ds.name, uri)
    chosen = await version(client, ds.name, uri, dataset_version_id="2024-06")
    v2 = await version(client, ds.name, uri)
    seven = await version(client, ds.name, uri, dataset_version_id="7")
    v8 = await version(client, ds.name, uri)
    ids = [x.name.rsplit("/", 1)[1] for x in (v1, chosen, v2, seven, v8)]
    assert ids == ["1", "2024-06", "2", "7", "8"]
    async with fails(Code.ALREADY_EXISTS, "DATASET_VERSION_ALREADY_EXISTS"):
        await version(client, ds.name, uri, dataset_version_id="7")

    latest = D.GetDatasetVersionRequest(name=f"{ds.name}/versions/@latest")
    assert (await client.datasets.GetDatasetVersion(latest)).name == v8.name
    archived = await client.datasets.ArchiveDatasetVersion(D.ArchiveDatasetVersionRequest(name=v8.name))
    assert archived.state == D.DatasetVersion.ARCHIVED
    assert (await client.datasets.GetDatasetVersion(latest)).name == seven.name
    got = await client.datasets.GetDataset(D.GetDatasetRequest(name=ds.name))
    assert (got.latest_version, got.version_count) == (seven.name, 5)
    async with fails(Code.FAILED_PRECONDITION, "ILLEGAL_STATE_TRANSITION"):
        await client.datasets.ArchiveDatasetVersion(D.ArchiveDatasetVersionRequest(name=v8.name))
    async with fails(Code.FAILED_PRECONDITION, "ILLEGAL_STATE_TRANSITION"):
        await client.datasets.UnarchiveDatasetVersion(D.UnarchiveDatasetVersionRequest(name=v1.name))
    back = await client.datasets.UnarchiveDatasetVersion(D.UnarchiveDatasetVersionRequest(name=v8.name))
    assert back.state == D.DatasetVersion.ACTIVE
    changed = await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.dataset_version.state_changed"
            and e.message.dataset_version.state == D.DatasetVersion.ACTIVE  # type: ignore[union-attr]
            and e.message.dataset_version.name == v8.name
        ),  # type: ignore[union-attr]
    )
    assert changed.message.previous_state == D.DatasetVersion.ARCHIVED  # type: ignore[union-attr]

    page1 = await client.datasets.ListDatasetVersions(
        D.ListDatasetVersionsRequest(parent=ds.name, page_size=2)
    )
    page2 = await client.datasets.ListDatasetVersions(
        D.ListDatasetVersionsRequest(parent=ds.name, page_size=2, page_token=page1.next_page_token)
    )
    page3 = await client.datasets.ListDatasetVersions(
        D.ListDatasetVersionsRequest(parent=ds.name, page_size=2, page_token=page2.next_page_token)
    )
    listed = [x.name.rsplit("/", 1)[1] for p in (page1, page2, page3) for x in p.dataset_versions]
    assert listed == ["8", "7", "2", "2024-06", "1"]
    assert page3.next_page_token == ""
    async with fails(Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
        await client.datasets.ListDatasetVersions(
            D.ListDatasetVersionsRequest(
                parent=ds.name, page_token=page1.next_page_token, filter="state = ACTIVE"
            )
        )
    active = await client.datasets.ListDatasetVersions(
        D.ListDatasetVersionsRequest(parent=ds.name, filter="state = ARCHIVED OR state = ACTIVE")
    )
    assert len(active.dataset_versions) == 5
    async with fails(Code.INVALID_ARGUMENT, "INVALID_FILTER"):
        await client.datasets.ListDatasetVersions(
            D.ListDatasetVersionsRequest(parent=ds.name, filter="color = red")
        )


async def test_latest_without_an_active_version_and_missing_things_are_not_found(
    client: Client, ws: str, tmp_path: pathlib.Path
) -> None:
    ds = await make(client, ws)
    async with fails(Code.NOT_FOUND, "DATASET_VERSION_NOT_FOUND"):
        await client.datasets.GetDatasetVersion(
            D.GetDatasetVersionRequest(name=f"{ds.name}/versions/@latest")
        )
    async with fails(Code.NOT_FOUND, "DATASET_VERSION_NOT_FOUND"):
        await client.datasets.GetDatasetVersion(D.GetDatasetVersionRequest(name=f"{ds.name}/versions/3"))
    async with fails(Code.NOT_FOUND, "DATASET_NOT_FOUND"):
        await client.datasets.GetDataset(D.GetDatasetRequest(name=f"{ws}/datasets/nothing"))
    async with fails(Code.NOT_FOUND, "DATASET_NOT_FOUND"):
        await version(client, f"{ws}/datasets/nothing", data_dir(tmp_path).as_uri())
    async with fails(Code.ALREADY_EXISTS, "DATASET_ALREADY_EXISTS"):
        await make(client, ws)


async def test_file_uris_are_checked_and_other_schemes_taken_as_given(
    client: Client, ws: str, tmp_path: pathlib.Path
) -> None:
    ds = await make(client, ws)
    async with fails(Code.FAILED_PRECONDITION, "URI_NOT_FOUND"):
        await version(client, ds.name, (tmp_path / "missing").as_uri())
    root = data_dir(tmp_path, files={"a.txt": "hello"})
    async with fails(Code.FAILED_PRECONDITION, "CHECKSUM_MISMATCH"):
        await client.datasets.CreateDatasetVersion(
            D.CreateDatasetVersionRequest(
                parent=ds.name, dataset_version=D.DatasetVersion(uri=root.as_uri(), checksum="sha256:abc")
            )
        )
    single = await version(client, ds.name, (root / "a.txt").as_uri())
    assert single.checksum == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert (single.size_bytes, single.file_count) == (5, 1)
    matching = await client.datasets.CreateDatasetVersion(
        D.CreateDatasetVersionRequest(
            parent=ds.name,
            dataset_version=D.DatasetVersion(uri=(root / "a.txt").as_uri(), checksum=single.checksum),
        )
    )
    assert matching.checksum == single.checksum
    s3 = await client.datasets.CreateDatasetVersion(
        D.CreateDatasetVersionRequest(
            parent=ds.name,
            dataset_version=D.DatasetVersion(uri="s3://bucket/qa/", size_bytes=10, checksum="md5:xyz"),
        )
    )
    assert (s3.uri, s3.size_bytes, s3.file_count, s3.checksum) == ("s3://bucket/qa/", 10, 0, "md5:xyz")
    async with fails(Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH"):
        await client.datasets.CreateDatasetVersion(
            D.CreateDatasetVersionRequest(
                parent=ds.name,
                dataset_version=D.DatasetVersion(uri="s3://b/x", source_job="workspaces/other/jobs/j"),
            )
        )
    async with fails(Code.INVALID_ARGUMENT, "INVALID_URI"):
        await version(client, ds.name, "file://host/relative")
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await version(client, ds.name, "")
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await version(client, ds.name, "ftp://somewhere/data")


async def test_request_ids_make_creates_idempotent(client: Client, ws: str, tmp_path: pathlib.Path) -> None:
    first = await client.datasets.CreateDataset(
        D.CreateDatasetRequest(parent=ws, dataset_id="qa", dataset=D.Dataset(), request_id="r-1")
    )
    again = await client.datasets.CreateDataset(
        D.CreateDatasetRequest(parent=ws, dataset_id="qa", dataset=D.Dataset(), request_id="r-1")
    )
    assert again.uid == first.uid
    async with fails(Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"):
        await client.datasets.CreateDataset(
            D.CreateDatasetRequest(parent=ws, dataset_id="other", dataset=D.Dataset(), request_id="r-1")
        )
    uri = data_dir(tmp_path).as_uri()
    rid = f"v-{ws}"[-60:]
    a = await version(client, first.name, uri, request_id=rid)
    b = await version(client, first.name, uri, request_id=rid)
    assert (a.name, a.uid) == (b.name, b.uid)
    listed = await client.datasets.ListDatasetVersions(D.ListDatasetVersionsRequest(parent=first.name))
    assert len(listed.dataset_versions) == 1


async def test_updates_follow_masks_and_etags(
    client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    ds = await make(client, ws, display_name="old", format="csv")
    updated = await client.datasets.UpdateDataset(
        D.UpdateDatasetRequest(
            dataset=D.Dataset(name=ds.name, display_name="new", format="parquet", etag=ds.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    assert (updated.display_name, updated.format) == ("new", "csv")
    assert updated.etag != ds.etag
    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.datasets.UpdateDataset(
            D.UpdateDatasetRequest(dataset=D.Dataset(name=ds.name, display_name="x", etag=ds.etag))
        )
    async with fails(Code.INVALID_ARGUMENT, "INVALID_UPDATE_MASK"):
        await client.datasets.UpdateDataset(
            D.UpdateDatasetRequest(
                dataset=D.Dataset(name=ds.name),
                update_mask=field_mask_pb2.FieldMask(paths=["latest_version"]),
            )
        )
    async with fails(Code.NOT_FOUND, "DATASET_NOT_FOUND"):
        await client.datasets.UpdateDataset(
            D.UpdateDatasetRequest(dataset=D.Dataset(name=f"{ws}/datasets/nope"))
        )
    # the embedded resource's name has no pattern in the proto: a malformed one is the caller's error
    for name in (ws, f"{ws}/datasets/{ds.name.rsplit('/', 1)[1]}/versions/1", f"{ws}/models/x"):
        async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
            await client.datasets.UpdateDataset(D.UpdateDatasetRequest(dataset=D.Dataset(name=name)))
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await client.datasets.UpdateDatasetVersion(
            D.UpdateDatasetVersionRequest(dataset_version=D.DatasetVersion(name=ds.name))
        )
    await watch.wait_for(
        lambda e: e.subject == "pai.lineage.dataset.updated" and e.message.dataset.name == ds.name
    )  # type: ignore[union-attr]

    v = await version(client, ds.name, data_dir(tmp_path).as_uri())
    renamed = await client.datasets.UpdateDatasetVersion(
        D.UpdateDatasetVersionRequest(
            dataset_version=D.DatasetVersion(name=v.name, display_name="June", labels={"split": "train"}),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
        )
    )
    assert (renamed.display_name, dict(renamed.labels), renamed.uri) == ("June", {"split": "train"}, v.uri)
    async with fails(Code.INVALID_ARGUMENT, "VERSION_IMMUTABLE"):
        await client.datasets.UpdateDatasetVersion(
            D.UpdateDatasetVersionRequest(
                dataset_version=D.DatasetVersion(name=v.name, uri="s3://elsewhere/x"),
                update_mask=field_mask_pb2.FieldMask(paths=["uri"]),
            )
        )
    for path in ("colour", "state", "create_time", "etag"):  # unknown or output-only: not a field to set
        async with fails(Code.INVALID_ARGUMENT, "INVALID_UPDATE_MASK"):
            await client.datasets.UpdateDatasetVersion(
                D.UpdateDatasetVersionRequest(
                    dataset_version=D.DatasetVersion(name=v.name),
                    update_mask=field_mask_pb2.FieldMask(paths=[path]),
                )
            )
    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.datasets.ArchiveDatasetVersion(D.ArchiveDatasetVersionRequest(name=v.name, etag=v.etag))
    await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.dataset_version.updated" and e.message.dataset_version.name == v.name
        )
    )  # type: ignore[union-attr]


async def test_delete_needs_force_while_versions_exist(
    client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    ds = await make(client, ws)
    v = await version(client, ds.name, data_dir(tmp_path).as_uri())
    async with fails(Code.FAILED_PRECONDITION, "DATASET_HAS_VERSIONS"):
        await client.datasets.DeleteDataset(D.DeleteDatasetRequest(name=ds.name))
    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.datasets.DeleteDatasetVersion(D.DeleteDatasetVersionRequest(name=v.name, etag='W/"99"'))
    await client.datasets.DeleteDataset(D.DeleteDatasetRequest(name=ds.name, force=True))
    async with fails(Code.NOT_FOUND, "DATASET_VERSION_NOT_FOUND"):
        await client.datasets.GetDatasetVersion(D.GetDatasetVersionRequest(name=v.name))
    async with fails(Code.NOT_FOUND, "DATASET_NOT_FOUND"):
        await client.datasets.DeleteDataset(D.DeleteDatasetRequest(name=ds.name))
    await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.dataset_version.deleted" and e.message.dataset_version.name == v.name
        )
    )  # type: ignore[union-attr]
    await watch.wait_for(
        lambda e: e.subject == "pai.lineage.dataset.deleted" and e.message.dataset.name == ds.name
    )  # type: ignore[union-attr]

    other = await make(client, ws, "plain")
    only = await version(client, other.name, "s3://b/x")
    await client.datasets.DeleteDatasetVersion(D.DeleteDatasetVersionRequest(name=only.name, etag=only.etag))
    after = await client.datasets.GetDataset(D.GetDatasetRequest(name=other.name))
    assert (after.version_count, after.latest_version) == (0, "")
    await client.datasets.DeleteDataset(D.DeleteDatasetRequest(name=other.name, etag=after.etag))


async def test_list_datasets_pages_by_name_and_filters(client: Client, ws: str) -> None:
    for i in range(5):
        await make(
            client,
            ws,
            f"d{i}",
            data_type=D.Dataset.TEXT if i % 2 else D.Dataset.IMAGE,
            labels={"team": f"t{i % 2}"},
        )
    page = await client.datasets.ListDatasets(D.ListDatasetsRequest(parent=ws, page_size=3))
    rest = await client.datasets.ListDatasets(
        D.ListDatasetsRequest(parent=ws, page_size=3, page_token=page.next_page_token)
    )
    assert [d.name.rsplit("/", 1)[1] for d in (*page.datasets, *rest.datasets)] == [f"d{i}" for i in range(5)]
    assert rest.next_page_token == ""
    text = await client.datasets.ListDatasets(
        D.ListDatasetsRequest(parent=ws, filter='data_type = TEXT AND labels.team = "t1"')
    )
    assert [d.name.rsplit("/", 1)[1] for d in text.datasets] == ["d1", "d3"]
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await client.datasets.ListDatasets(D.ListDatasetsRequest(parent=ws, page_size=-1))
    async with fails(Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
        await client.datasets.ListDatasets(D.ListDatasetsRequest(parent=ws, page_token="garbage"))


async def test_calls_without_a_credential_are_refused(stack: Stack, ws: str) -> None:
    anonymous = Client(stack.app.address, "")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.datasets.GetDataset(D.GetDatasetRequest(name=f"{ws}/datasets/qa"))
        assert caught.value.code() == Code.UNAUTHENTICATED
    finally:
        await anonymous.channel.close()


async def test_a_version_written_by_a_job_records_the_produced_edge_and_keeps_its_node(
    client: Client, ws: str
) -> None:
    ds = await make(client, ws)
    job = f"{ws}/jobs/clean"
    v = await client.datasets.CreateDatasetVersion(
        D.CreateDatasetVersionRequest(
            parent=ds.name, dataset_version=D.DatasetVersion(uri="s3://b/clean", source_job=job)
        )
    )
    again = await version(client, ds.name, "s3://b/clean2")
    edges = await client.lineage.ListLineageEdges(lineage_pb2.ListLineageEdgesRequest(parent=ws))
    assert [(e.source, e.type, e.target, e.recorder) for e in edges.lineage_edges] == [
        (job, lineage_pb2.LineageEdge.PRODUCED, v.name, "pai.lineage.dataset_version.created")
    ]
    await client.datasets.DeleteDatasetVersion(D.DeleteDatasetVersionRequest(name=v.name))
    q = await client.lineage.QueryLineage(lineage_pb2.QueryLineageRequest(parent=ws, entity=v.name))
    assert q.root.deleted and [n.name for n in q.nodes] == [v.name, job]
    # a dataset stands for its latest version in a query
    latest = await client.lineage.QueryLineage(lineage_pb2.QueryLineageRequest(parent=ws, entity=ds.name))
    assert (latest.root.name, latest.root.display_name) == (again.name, "qa:2")
