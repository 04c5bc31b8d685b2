"""What a job is made of, from `pai job submit`'s flags or a JSON/YAML file (sweeps use them too).

`--code DIR` is copied under `$PAI_HOME/code/` first, so editing the directory after submitting does
not change what the job runs (dlc reads the code from the copy).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message

from pai.dlc.v1 import job_spec_pb2
from pai_cli.commands.common import Context
from pai_cli.errors import UsageError
from pai_cli.quantities import AmountError, parse_limits

RS = job_spec_pb2.ReplicaSpec


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} is KEY=VALUE: {item!r}")
        out[key] = value
    return out


def copy_code(ctx: Context, source: str, name: str) -> str:
    src = Path(source).expanduser().resolve()
    if not src.is_dir():
        raise UsageError(f"--code {source}: not a directory")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    dest = ctx.config.home / "code" / ctx.workspace.split("/")[1] / f"{name}-{stamp}"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".git", "*.pyc"))
    return dest.as_uri()


def spec_from_flags(ctx: Context, args: argparse.Namespace) -> job_spec_pb2.JobSpec:
    if not args.command:
        raise UsageError("--command is required (or give the whole job with -f)")
    command = shlex.split(args.command)
    resources = job_spec_pb2.Resources()
    if args.resources:
        try:
            amounts = parse_limits(args.resources)
        except AmountError as e:
            raise UsageError(f"--resources: {e}") from None
        resources.cpu_milli = amounts.cpu_milli
        resources.memory_bytes = amounts.memory_bytes
        if amounts.gpu_milli % 1000 == 0:
            resources.gpu_count = amounts.gpu_milli // 1000
        elif amounts.gpu_milli < 1000:
            resources.gpu_milli = amounts.gpu_milli
        else:
            raise UsageError("--resources: gpu is whole cards, or a fraction of one card")
    env = _pairs(args.env, "--env")
    replicas = []
    if args.master:
        replicas.append(RS(role=RS.MASTER, count=1, command=command, resources=resources, env=env))
    replicas.append(RS(role=RS.WORKER, count=args.workers, command=command, resources=resources, env=env))
    spec = job_spec_pb2.JobSpec(
        kind=job_spec_pb2.JobSpec.Kind.Value(args.kind.upper()),
        replica_specs=replicas,
        hyperparameters=_pairs(args.hp, "--hp"),
        max_restarts=args.max_restarts,
        priority=args.priority,
        spot=args.spot,
        checkpoint_uri=args.checkpoint_uri or "",
        output_uri=args.output_uri or "",
    )
    if args.deadline:
        spec.active_deadline.FromTimedelta(dt.timedelta(seconds=args.deadline))
    if args.silence_timeout:
        spec.log_silence_timeout.FromTimedelta(dt.timedelta(seconds=args.silence_timeout))
    for item in args.dataset:
        spec.data_sources.add(dataset_version=dataset_version_name(ctx.workspace, item))
    for uri in args.data:
        spec.data_sources.add(uri=uri if "://" in uri else Path(uri).expanduser().resolve().as_uri())
    if args.output_model:
        spec.output_model = ctx.in_workspace("models", args.output_model)
    if args.code:
        spec.code.uri = copy_code(ctx, args.code, args.name)
    return spec


def dataset_version_name(workspace: str, value: str) -> str:
    """`qa` → the latest version of dataset qa; `qa:2` → its version 2; full names stay as they are."""
    if value.startswith("workspaces/"):
        return value
    name, _, version = value.partition(":")
    if not name:
        raise UsageError(f"--dataset is NAME or NAME:VERSION: {value!r}")
    return f"{workspace}/datasets/{name}/versions/{version or '@latest'}"


def load_message(path: str, message: Message) -> None:
    """Fill `message` from a JSON or YAML file in the API's JSON mapping (camelCase or snake_case)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise UsageError(f"-f {path}: expected a mapping at the top")
            json_format.ParseDict(data, message)
        else:
            json_format.Parse(text, message)
    except (OSError, ValueError, json_format.ParseError) as e:
        raise UsageError(f"-f {path}: {e}") from None
    except Exception as e:  # a YAML syntax error (yaml.YAMLError), without importing yaml for JSON files
        if type(e).__module__.startswith("yaml"):
            raise UsageError(f"-f {path}: {e}") from None
        raise
