"""`pai dataset ...` and `pai model ...`: the data jobs read and the models they register (lineage).

`pai dataset create qa --uri ./data/qa` registers version 1 of dataset `qa` (a local path becomes a
`file://` URI; lineage computes its size and checksum); `pai job submit ... --dataset qa` reads its
latest version. A job with `--output-model qa-model` registers its output as a new model version
when it succeeds; `pai model versions qa-model` lists them with the job that made each.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pai.lineage.v1 import dataset_pb2, lineage_pb2, model_pb2
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_limit_option,
    add_workspace_option,
)
from pai_cli.output import EMPTY, Column, enum, field, last_segment, timestamp

DV = dataset_pb2.DatasetVersion
MV = model_pb2.ModelVersion


def _uri(value: str) -> str:
    """A URI as given, or a local path as its `file://` URI."""
    return value if "://" in value else Path(value).expanduser().resolve().as_uri()


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _metrics(v: model_pb2.ModelVersion) -> str:
    return ", ".join(f"{k}={v.metrics[k]:.4g}" for k in sorted(v.metrics)) or EMPTY


DATASET_COLUMNS = (
    Column("NAME", last_segment("name")),
    Column("VERSIONS", lambda d: str(d.version_count)),
    Column("LATEST", lambda d: d.latest_version.rsplit("/", 1)[-1] if d.latest_version else EMPTY),
    Column("CREATED", timestamp("create_time")),
)
DATASET_DETAIL = (
    Column("NAME", field("name")),
    Column("DESCRIPTION", field("description")),
    Column("VERSIONS", lambda d: str(d.version_count)),
    Column("LATEST", field("latest_version")),
    Column("CREATED", timestamp("create_time")),
)
VERSION_COLUMNS = (
    Column("VERSION", last_segment("name")),
    Column("STATE", enum("state")),
    Column("URI", field("uri")),
    Column("SIZE", lambda v: _size(v.size_bytes)),
    Column("FILES", lambda v: str(v.file_count)),
    Column("CREATED", timestamp("create_time")),
)
MODEL_COLUMNS = (
    Column("NAME", last_segment("name")),
    Column("VERSIONS", lambda m: str(m.version_count)),
    Column("LATEST", lambda m: m.latest_version.rsplit("/", 1)[-1] if m.latest_version else EMPTY),
    Column("ALIASES", lambda m: ", ".join(f"{a}={m.aliases[a]}" for a in sorted(m.aliases)) or EMPTY),
    Column("CREATED", timestamp("create_time")),
)
MODEL_VERSION_COLUMNS = (
    Column("VERSION", last_segment("name")),
    Column("STATE", enum("state")),
    Column("JOB", lambda v: v.source_job.rsplit("/", 1)[-1] if v.source_job else EMPTY),
    Column("METRICS", _metrics),
    Column("ARTIFACT", field("artifact_uri")),
    Column("CREATED", timestamp("create_time")),
)


def entity_name(ctx: Context, kind: str, value: str) -> str:
    """`model mnist:2` → `<ws>/models/mnist/versions/2` (no version: the latest); `job train` →
    `<ws>/jobs/train`; full resource names stay as they are."""
    if value.startswith("workspaces/"):
        return value
    if kind == "job":
        return ctx.in_workspace("jobs", value)
    name, _, version = value.partition(":")
    return f"{ctx.workspace}/{kind}s/{name}/versions/{version or '@latest'}"


def register(subparsers: Subparsers) -> None:
    """Add `dataset`, `model` and `lineage` to the command line."""
    dataset = add_group(subparsers, "dataset", "datasets and their versions: the data jobs read")
    create = add_command(dataset, "create", create_dataset, "register a dataset and its first version")
    create.add_argument("name", metavar="NAME", help="the dataset's id in the workspace")
    add_workspace_option(create)
    create.add_argument("--uri", required=True, metavar="URI", help="where the data is (a local path or URI)")
    create.add_argument("--description", default="", metavar="TEXT")
    add_version = add_command(dataset, "add-version", add_dataset_version, "register a new version")
    add_version.add_argument("name", metavar="NAME")
    add_workspace_option(add_version)
    add_version.add_argument("--uri", required=True, metavar="URI", help="where the new data is")
    add_version.add_argument("--description", default="", metavar="TEXT")
    listing = add_command(dataset, "list", list_datasets, "datasets in the workspace")
    add_workspace_option(listing)
    add_limit_option(listing)
    get = add_command(dataset, "get", get_dataset, "one dataset")
    get.add_argument("name", metavar="NAME")
    add_workspace_option(get)
    versions = add_command(dataset, "versions", list_dataset_versions, "a dataset's versions, newest first")
    versions.add_argument("name", metavar="NAME")
    add_workspace_option(versions)
    add_limit_option(versions)

    model = add_group(subparsers, "model", "the model registry: models and the versions jobs register")
    listing = add_command(model, "list", list_models, "models in the workspace")
    add_workspace_option(listing)
    add_limit_option(listing)
    get = add_command(model, "get", get_model, "one model")
    get.add_argument("name", metavar="NAME")
    add_workspace_option(get)
    versions = add_command(model, "versions", list_model_versions, "a model's versions, newest first")
    versions.add_argument("name", metavar="NAME")
    add_workspace_option(versions)
    add_limit_option(versions)

    lineage = add_group(subparsers, "lineage", "what was made from what: dataset → job → model")
    show = add_command(lineage, "show", show_lineage, "the lineage of a model, dataset or job")
    show.add_argument("kind", choices=("model", "dataset", "job"))
    show.add_argument("name", metavar="NAME[:VERSION]", help="e.g. mnist:1 (no version: the latest)")
    add_workspace_option(show)
    show.add_argument("--direction", choices=("up", "down", "both"), default="both")
    show.add_argument(
        "--depth", type=int, default=0, metavar="N", help="hops to follow (default: the server's)"
    )
    show.add_argument(
        "--format", choices=("text", "dot", "mermaid"), default="text", help="dot: pipe into `dot -Tsvg`"
    )


def create_dataset(ctx: Context) -> int:
    client = ctx.client
    created: dataset_pb2.Dataset = client.call(
        client.datasets.CreateDataset,
        dataset_pb2.CreateDatasetRequest(
            parent=ctx.workspace,
            dataset_id=ctx.args.name,
            dataset=dataset_pb2.Dataset(description=ctx.args.description),
            initial_version=DV(uri=_uri(ctx.args.uri)),
            request_id=str(uuid.uuid4()),
        ),
    )
    ctx.output.resource(created, DATASET_DETAIL)
    return 0


def add_dataset_version(ctx: Context) -> int:
    client = ctx.client
    version: dataset_pb2.DatasetVersion = client.call(
        client.datasets.CreateDatasetVersion,
        dataset_pb2.CreateDatasetVersionRequest(
            parent=ctx.in_workspace("datasets", ctx.args.name),
            dataset_version=DV(uri=_uri(ctx.args.uri), description=ctx.args.description),
            request_id=str(uuid.uuid4()),
        ),
    )
    ctx.output.resource(version, VERSION_COLUMNS)
    return 0


def list_datasets(ctx: Context) -> int:
    client = ctx.client
    found = ctx.list_all(
        client.datasets.ListDatasets,
        lambda token, size: dataset_pb2.ListDatasetsRequest(
            parent=ctx.workspace, page_token=token, page_size=size
        ),
        "datasets",
    )
    ctx.output.resources(found, DATASET_COLUMNS, f"datasets in {ctx.workspace}")
    return 0


def get_dataset(ctx: Context) -> int:
    client = ctx.client
    name = ctx.in_workspace("datasets", ctx.args.name)
    ctx.output.resource(
        client.call(client.datasets.GetDataset, dataset_pb2.GetDatasetRequest(name=name)), DATASET_DETAIL
    )
    return 0


def list_dataset_versions(ctx: Context) -> int:
    client = ctx.client
    parent = ctx.in_workspace("datasets", ctx.args.name)
    found = ctx.list_all(
        client.datasets.ListDatasetVersions,
        lambda token, size: dataset_pb2.ListDatasetVersionsRequest(
            parent=parent, page_token=token, page_size=size
        ),
        "dataset_versions",
    )
    ctx.output.resources(found, VERSION_COLUMNS, f"versions of {parent}")
    return 0


def list_models(ctx: Context) -> int:
    client = ctx.client
    found = ctx.list_all(
        client.models.ListModels,
        lambda token, size: model_pb2.ListModelsRequest(
            parent=ctx.workspace, page_token=token, page_size=size
        ),
        "models",
    )
    ctx.output.resources(found, MODEL_COLUMNS, f"models in {ctx.workspace}")
    return 0


def get_model(ctx: Context) -> int:
    client = ctx.client
    name = ctx.in_workspace("models", ctx.args.name)
    ctx.output.resource(
        client.call(client.models.GetModel, model_pb2.GetModelRequest(name=name)), MODEL_COLUMNS
    )
    return 0


def list_model_versions(ctx: Context) -> int:
    client = ctx.client
    parent = ctx.in_workspace("models", ctx.args.name)
    found = ctx.list_all(
        client.models.ListModelVersions,
        lambda token, size: model_pb2.ListModelVersionsRequest(
            parent=parent, page_token=token, page_size=size
        ),
        "model_versions",
    )
    ctx.output.resources(found, MODEL_VERSION_COLUMNS, f"versions of {parent}")
    return 0


DIRECTIONS = {"up": lineage_pb2.UPSTREAM, "down": lineage_pb2.DOWNSTREAM, "both": lineage_pb2.BOTH}
FORMATS = {
    "text": lineage_pb2.RenderLineageRequest.TEXT,
    "dot": lineage_pb2.RenderLineageRequest.DOT,
    "mermaid": lineage_pb2.RenderLineageRequest.MERMAID,
}


def show_lineage(ctx: Context) -> int:
    client = ctx.client
    args = ctx.args
    entity = entity_name(ctx, args.kind, args.name)
    if entity.endswith("/versions/@latest"):  # the graph knows concrete versions: ask the owner which
        if args.kind == "model":
            entity = client.call(
                client.models.GetModelVersion, model_pb2.GetModelVersionRequest(name=entity)
            ).name
        else:
            entity = client.call(
                client.datasets.GetDatasetVersion, dataset_pb2.GetDatasetVersionRequest(name=entity)
            ).name
    rendered: lineage_pb2.RenderLineageResponse = client.call(
        client.lineage.RenderLineage,
        lineage_pb2.RenderLineageRequest(
            parent=ctx.workspace,
            entity=entity,
            direction=DIRECTIONS[args.direction],
            max_depth=max(0, args.depth),
            format=FORMATS[args.format],
        ),
    )
    if ctx.output.json:
        ctx.output.document({"entity": entity, "content": rendered.content, "truncated": rendered.truncated})
    else:
        ctx.output.line(rendered.content.rstrip("\n"))
        if rendered.truncated:
            ctx.output.note("(cut short by the depth or node limit)")
    return 0
