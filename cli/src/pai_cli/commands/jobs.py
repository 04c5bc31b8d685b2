"""`pai job ...`: submit training jobs, follow them, read their logs and metrics, stop and delete them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pai.dlc.v1 import job_pb2, job_spec_pb2, log_pb2, metric_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_limit_option,
    add_workspace_option,
    positive_int,
    report_deleted,
)
from pai_cli.commands.follow import follow
from pai_cli.commands.specs import copy_code, load_message, spec_from_flags
from pai_cli.errors import CliError
from pai_cli.output import EMPTY, Column, enum, field, last_segment, timestamp, to_dict
from pai_cli.plot import render

Job = job_pb2.Job
RS = job_spec_pb2.ReplicaSpec
TERMINAL = (Job.SUCCEEDED, Job.FAILED, Job.STOPPED)
KINDS = ("pytorch", "tensorflow", "mpi", "xgboost", "custom")


def _restarts(job: job_pb2.Job) -> str:
    return str(job.restart_count) + (f" (+{job.preemption_count} preempted)" if job.preemption_count else "")


def _replicas(job: job_pb2.Job) -> str:
    return str(sum(max(1, rs.count) for rs in job.spec.replica_specs))


JOB_COLUMNS = (
    Column("NAME", last_segment("name")),
    Column("STATE", enum("state")),
    Column("REPLICAS", _replicas),
    Column("RESTARTS", _restarts),
    Column("REASON", field("reason")),
    Column("CREATED", timestamp("create_time")),
)
JOB_DETAIL = (
    Column("NAME", field("name")),
    Column("STATE", enum("state")),
    Column("REASON", field("reason")),
    Column("MESSAGE", field("message")),
    Column(
        "REPLICAS", lambda j: ", ".join(f"{s.replica}={RS_STATE(s)}" for s in j.replica_statuses) or EMPTY
    ),
    Column("RESTARTS", _restarts),
    Column("FAILURE", lambda j: j.failure.message if j.HasField("failure") else EMPTY),
    Column("WORKLOAD", field("workload")),
    Column("CHECKPOINTS", lambda j: j.spec.checkpoint_uri or EMPTY),
    Column("OUTPUT", lambda j: j.spec.output_uri or EMPTY),
    Column(
        "DATA",
        lambda j: ", ".join(d.dataset_version or d.uri for d in j.spec.data_sources) or EMPTY,
    ),
    Column("MODEL", lambda j: j.output_model_version or j.spec.output_model or EMPTY),
    Column("CREATED", timestamp("create_time")),
    Column("STARTED", timestamp("start_time")),
    Column("ENDED", timestamp("end_time")),
)


def RS_STATE(s: job_pb2.ReplicaStatus) -> str:
    return job_pb2.ReplicaStatus.State.Name(s.state)


def job_name(ctx: Context, value: str) -> str:
    return ctx.in_workspace("jobs", value)


def register(subparsers: Subparsers) -> None:
    """Add `job` to the command line."""
    job = add_group(subparsers, "job", "training jobs: submit, follow, logs, metrics, stop")
    _register_submit(job)
    _register_reads(job)


def _register_submit(job: Subparsers) -> None:
    submit = add_command(job, "submit", submit_job, "submit a distributed training job")
    submit.add_argument("name", metavar="NAME", help="the job's id in the workspace")
    add_workspace_option(submit)
    submit.add_argument(
        "-f", "--file", metavar="JOB.yaml", help="the whole job as YAML or JSON (the API's Job)"
    )
    submit.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="worker replicas (default 1)"
    )
    submit.add_argument("--master", action="store_true", help="add a master replica as rank 0")
    submit.add_argument("--command", metavar="CMD", help='what each replica runs, e.g. "python train.py"')
    submit.add_argument(
        "--code", metavar="DIR", help="the code directory (copied; the replicas' working dir)"
    )
    submit.add_argument("--kind", choices=KINDS, default="pytorch", help="framework (default pytorch)")
    submit.add_argument("--resources", metavar="AMOUNTS", help="per replica, e.g. cpu=2,memory=4Gi,gpu=1")
    submit.add_argument("--env", action="append", default=[], metavar="K=V", help="an environment variable")
    submit.add_argument("--hp", action="append", default=[], metavar="K=V", help="a hyperparameter")
    submit.add_argument("--max-restarts", type=int, default=0, metavar="N", help="gang restarts allowed")
    submit.add_argument("--priority", type=int, default=0, metavar="P", help="0..1000, higher first")
    submit.add_argument("--spot", action="store_true", help="preemptible: resumes from its checkpoint")
    submit.add_argument("--deadline", type=float, metavar="SECONDS", help="fail after running this long")
    submit.add_argument("--silence-timeout", type=float, metavar="SECONDS", help="restart when logs go quiet")
    submit.add_argument("--checkpoint-uri", metavar="URI", help="checkpoint directory (default: dlc's)")
    submit.add_argument("--output-uri", metavar="URI", help="output directory (default: dlc's)")
    submit.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME[:VERSION]",
        help="a dataset version to read (default the latest); its path is $PAI_DATA_DIR (repeatable)",
    )
    submit.add_argument(
        "--data", action="append", default=[], metavar="URI", help="a data directory by URI (repeatable)"
    )
    submit.add_argument(
        "--output-model", metavar="MODEL", help="register the output directory as a new version of MODEL"
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the job until it ends; exit 0 if it succeeds"
    )


def _register_reads(job: Subparsers) -> None:
    listing = add_command(job, "list", list_jobs, "jobs in the workspace, newest first")
    add_workspace_option(listing)
    add_limit_option(listing)
    for name, handler, text in (
        ("get", get_job, "one job: state, reason, replicas"),
        ("stop", stop_job, "stop a job: every replica is killed"),
        ("delete", delete_job, "delete a finished job, its logs and history (checkpoints and outputs stay)"),
        ("wait", wait_job, "follow a job until it ends; exit 0 if it succeeds"),
    ):
        cmd = add_command(job, name, handler, text)
        cmd.add_argument("name", metavar="NAME")
        add_workspace_option(cmd)
        if name == "delete":
            cmd.add_argument("--force", action="store_true", help="stop the job first if it still runs")
    logs = add_command(job, "logs", job_logs, "a job's logs, by replica (every attempt)")
    logs.add_argument("name", metavar="NAME")
    add_workspace_option(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument(
        "--replica", action="append", default=[], metavar="R", help="e.g. worker-1 (repeatable)"
    )
    logs.add_argument("--attempt", type=int, metavar="N", help="only attempt N (0 is the first run)")
    logs.add_argument("--tail", type=positive_int, metavar="N", help="the last N lines of each replica")
    metrics = add_command(job, "metrics", job_metrics, "the metrics a job reported: a table, and a PNG plot")
    metrics.add_argument("name", metavar="NAME")
    add_workspace_option(metrics)
    metrics.add_argument("--key", action="append", default=[], metavar="KEY", help="only this metric")
    metrics.add_argument("--png", metavar="PATH", help="also draw the series into this PNG file")


def submit_job(ctx: Context) -> int:
    args = ctx.args
    job = Job()
    if args.file:
        load_message(args.file, job)
        if args.code:
            job.spec.code.uri = copy_code(ctx, args.code, args.name)
    else:
        job.spec.CopyFrom(spec_from_flags(ctx, args))
    client = ctx.client
    created: job_pb2.Job = client.call(
        client.jobs.CreateJob, job_pb2.CreateJobRequest(parent=ctx.workspace, job_id=args.name, job=job)
    )
    if not args.wait:
        ctx.output.resource(created, JOB_DETAIL)
        return 0
    ctx.output.note(f"submitted {created.name}")
    return _follow(ctx, created.name)


def _follow(ctx: Context, name: str) -> int:
    """Follow a job until it ends."""
    client = ctx.client
    return follow(
        ctx,
        lambda: client.call(client.jobs.GetJob, job_pb2.GetJobRequest(name=name)),
        lambda job: f"{Job.State.Name(job.state):<10} {job.reason}: {job.message}",
        lambda job: job.state == Job.SUCCEEDED if job.state in TERMINAL else None,
        JOB_DETAIL,
    )


def wait_job(ctx: Context) -> int:
    return _follow(ctx, job_name(ctx, ctx.args.name))


def list_jobs(ctx: Context) -> int:
    client = ctx.client

    def fetch(token: str, size: int) -> tuple[list[job_pb2.Job], str]:
        page: job_pb2.ListJobsResponse = client.call(
            client.jobs.ListJobs,
            job_pb2.ListJobsRequest(parent=ctx.workspace, page_token=token, page_size=size),
        )
        return list(page.jobs), page.next_page_token

    ctx.output.resources(collect(fetch, ctx.args.limit), JOB_COLUMNS, f"jobs in {ctx.workspace}")
    return 0


def get_job(ctx: Context) -> int:
    client = ctx.client
    job = client.call(client.jobs.GetJob, job_pb2.GetJobRequest(name=job_name(ctx, ctx.args.name)))
    ctx.output.resource(job, JOB_DETAIL)
    return 0


def stop_job(ctx: Context) -> int:
    client = ctx.client
    job = client.call(client.jobs.StopJob, job_pb2.StopJobRequest(name=job_name(ctx, ctx.args.name)))
    ctx.output.resource(job, JOB_DETAIL)
    return 0


def delete_job(ctx: Context) -> int:
    client = ctx.client
    name = job_name(ctx, ctx.args.name)
    client.call(client.jobs.DeleteJob, job_pb2.DeleteJobRequest(name=name, force=ctx.args.force))
    report_deleted(ctx, name)
    return 0


def job_logs(ctx: Context) -> int:
    """StreamJobLogs: `[worker-0] text` lines (JSON lines with --output json)."""
    args = ctx.args
    client = ctx.client
    request = log_pb2.StreamJobLogsRequest(
        name=job_name(ctx, args.name), replicas=args.replica, follow=args.follow, tail_lines=args.tail or 0
    )
    if args.attempt is not None:
        request.attempt = args.attempt
    try:
        for response in client.stream(client.jobs.StreamJobLogs, request):
            for e in response.entries:
                if ctx.output.json:
                    sys.stdout.write(json.dumps(to_dict(e)) + "\n")
                else:
                    prefix = f"[{e.replica}{'#' + str(e.attempt) if e.attempt else ''}]"
                    sys.stdout.write(f"{prefix} {e.text}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0


def job_metrics(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client
    response: metric_pb2.QueryJobMetricsResponse = client.call(
        client.jobs.QueryJobMetrics,
        metric_pb2.QueryJobMetricsRequest(name=job_name(ctx, args.name), keys=args.key),
    )
    if args.png:
        series = [(s.key, s.rank, [(float(p.step), p.value) for p in s.points]) for s in response.series]
        try:
            Path(args.png).write_bytes(render(series))
        except OSError as e:
            raise CliError(f"--png {args.png}: {e}") from None
        ctx.output.note(f"plot written to {args.png}")
    if ctx.output.json:
        ctx.output.document([to_dict(s) for s in response.series])
        return 0
    rows = [
        [
            s.key,
            str(s.rank),
            str(s.last.step),
            f"{s.last.value:.6g}",
            f"{s.min:.6g}",
            f"{s.max:.6g}",
            str(s.count),
        ]
        for s in response.series
    ]
    if not rows:
        ctx.output.line("no metrics reported (training code prints `@pai.metric {...}` lines)")
    else:
        ctx.output.table(["KEY", "RANK", "LAST STEP", "LAST", "MIN", "MAX", "POINTS"], rows)
    return 0
