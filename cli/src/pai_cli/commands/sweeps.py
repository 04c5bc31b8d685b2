"""`pai sweep ...`: hyperparameter sweeps that fan out into training jobs, and their trials.

`pai sweep create NAME -f sweep.json` takes the API's Sweep as JSON (the job template is a JobSpec);
`--param` adds search-space entries without writing JSON:
  --param lr=double:0.001:0.1:log   --param bs=int:16:128:16   --param opt=choice:sgd,adam
"""

from __future__ import annotations

from pai.dlc.v1 import sweep_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_workspace_option,
    positive_int,
    report_deleted,
)
from pai_cli.commands.follow import follow
from pai_cli.commands.specs import copy_code, load_message
from pai_cli.errors import UsageError
from pai_cli.output import EMPTY, Column, enum, field, last_segment, timestamp

S = sweep_pb2.Sweep
P = sweep_pb2.ParameterSpec
TERMINAL = (S.SUCCEEDED, S.FAILED, S.STOPPED)


def _assignment(t: sweep_pb2.Trial) -> str:
    return ",".join(f"{a.name}={a.value}" for a in t.parameter_assignments) or EMPTY


def _value(t: sweep_pb2.Trial) -> str:
    return f"{t.objective_value:.6g}" if t.HasField("objective_value") else EMPTY


def _counts(s: sweep_pb2.Sweep) -> str:
    c = s.trial_counts
    return f"{c.succeeded}/{c.total} ok, {c.running} running, {c.failed} failed"


SWEEP_COLUMNS = (
    Column("NAME", last_segment("name")),
    Column("STATE", enum("state")),
    Column("TRIALS", _counts),
    Column("BEST", lambda s: _assignment(s.best_trial) if s.HasField("best_trial") else EMPTY),
    Column("CREATED", timestamp("create_time")),
)
SWEEP_DETAIL = (
    Column("NAME", field("name")),
    Column("STATE", enum("state")),
    Column("REASON", field("reason")),
    Column("MESSAGE", field("message")),
    Column("TRIALS", _counts),
    Column("BEST TRIAL", lambda s: s.best_trial.name or EMPTY),
    Column("BEST VALUES", lambda s: _assignment(s.best_trial) if s.HasField("best_trial") else EMPTY),
    Column("BEST OBJECTIVE", lambda s: _value(s.best_trial)),
    Column("CREATED", timestamp("create_time")),
)
TRIAL_COLUMNS = (
    Column("TRIAL", last_segment("name")),
    Column("STATE", enum("state")),
    Column("PARAMETERS", _assignment),
    Column("OBJECTIVE", _value),
    Column("JOB", last_segment("job")),
)


def sweep_name(ctx: Context, value: str) -> str:
    return ctx.in_workspace("sweeps", value)


def parse_param(text: str) -> sweep_pb2.ParameterSpec:
    """`name=double:min:max[:log]`, `name=int:min:max[:step]`, `name=choice:a,b,c`, `name=grid:0.1,0.2`."""
    name, sep, rest = text.partition("=")
    kind, _, body = rest.partition(":")
    if not sep or not name or not body:
        raise UsageError(f"--param is NAME=TYPE:..., e.g. lr=double:0.001:0.1:log: {text!r}")
    parts = body.split(":")
    try:
        if kind == "choice":
            return P(name=name, type=P.CATEGORICAL, values=body.split(","))
        if kind == "grid":
            return P(name=name, type=P.DISCRETE, values=body.split(","))
        if kind in ("double", "int"):
            p = P(
                name=name,
                type=P.DOUBLE if kind == "double" else P.INT,
                min=float(parts[0]),
                max=float(parts[1]),
            )
            for extra in parts[2:]:
                if extra == "log":
                    p.log_scale = True
                else:
                    p.step = float(extra)
            return p
    except (ValueError, IndexError):
        pass
    raise UsageError(
        f"--param {text!r}: types are double:MIN:MAX[:STEP][:log], int:MIN:MAX[:STEP], choice:A,B, grid:1,2"
    )


def register(subparsers: Subparsers) -> None:
    """Add `sweep` to the command line."""
    sweep = add_group(subparsers, "sweep", "hyperparameter sweeps: trials are training jobs")
    create = add_command(sweep, "create", create_sweep, "create a sweep from a JSON spec and/or flags")
    create.add_argument("name", metavar="NAME")
    add_workspace_option(create)
    create.add_argument("-f", "--file", metavar="SWEEP.yaml", help="the API's Sweep as YAML or JSON")
    create.add_argument("--code", metavar="DIR", help="the template's code directory (copied)")
    create.add_argument("--param", action="append", default=[], metavar="SPEC", help="a search-space entry")
    create.add_argument("--metric", metavar="KEY", help="objective metric key (e.g. loss)")
    create.add_argument("--goal", choices=("minimize", "maximize"), help="objective goal")
    create.add_argument("--parallelism", type=positive_int, metavar="N")
    create.add_argument("--max-trials", type=positive_int, metavar="N")
    create.add_argument("--random", action="store_true", help="random search instead of the grid")
    create.add_argument("--wait", action="store_true", help="follow it until it ends; exit 0 if it succeeds")
    for name, handler, text in (
        ("get", get_sweep, "one sweep: state, trial counts, best trial"),
        ("stop", stop_sweep, "stop a sweep and every running trial"),
        ("delete", delete_sweep, "delete a finished sweep"),
        ("trials", list_trials, "a sweep's trials, their parameters and objective values"),
    ):
        cmd = add_command(sweep, name, handler, text)
        cmd.add_argument("name", metavar="NAME")
        add_workspace_option(cmd)
    listing = add_command(sweep, "list", list_sweeps, "sweeps in the workspace")
    add_workspace_option(listing)


def create_sweep(ctx: Context) -> int:
    args = ctx.args
    s = S()
    if args.file:
        load_message(args.file, s)
    spec = s.spec
    spec.parameters.extend(parse_param(p) for p in args.param)
    if args.metric:
        spec.objective.metric_key = args.metric
    if args.goal:
        spec.objective.goal = sweep_pb2.Objective.Goal.Value(args.goal.upper())
    if args.parallelism:
        spec.parallelism = args.parallelism
    if args.max_trials:
        spec.max_trials = args.max_trials
    if args.random:
        spec.algorithm.type = sweep_pb2.Algorithm.RANDOM
    if args.code:
        spec.job_template.code.uri = copy_code(ctx, args.code, args.name)
    client = ctx.client
    created: S = client.call(
        client.sweeps.CreateSweep,
        sweep_pb2.CreateSweepRequest(parent=ctx.workspace, sweep_id=args.name, sweep=s),
    )
    if not args.wait:
        ctx.output.resource(created, SWEEP_DETAIL)
        return 0
    return follow(
        ctx,
        lambda: client.call(client.sweeps.GetSweep, sweep_pb2.GetSweepRequest(name=created.name)),
        lambda now: f"{S.State.Name(now.state):<9} {_counts(now)}",
        lambda now: now.state == S.SUCCEEDED if now.state in TERMINAL else None,
        SWEEP_DETAIL,
    )


def get_sweep(ctx: Context) -> int:
    client = ctx.client
    s = client.call(client.sweeps.GetSweep, sweep_pb2.GetSweepRequest(name=sweep_name(ctx, ctx.args.name)))
    ctx.output.resource(s, SWEEP_DETAIL)
    return 0


def stop_sweep(ctx: Context) -> int:
    client = ctx.client
    s = client.call(client.sweeps.StopSweep, sweep_pb2.StopSweepRequest(name=sweep_name(ctx, ctx.args.name)))
    ctx.output.resource(s, SWEEP_DETAIL)
    return 0


def delete_sweep(ctx: Context) -> int:
    client = ctx.client
    name = sweep_name(ctx, ctx.args.name)
    client.call(client.sweeps.DeleteSweep, sweep_pb2.DeleteSweepRequest(name=name))
    report_deleted(ctx, name)
    return 0


def list_sweeps(ctx: Context) -> int:
    client = ctx.client

    def fetch(token: str, size: int) -> tuple[list[sweep_pb2.Sweep], str]:
        page: sweep_pb2.ListSweepsResponse = client.call(
            client.sweeps.ListSweeps,
            sweep_pb2.ListSweepsRequest(parent=ctx.workspace, page_token=token, page_size=size),
        )
        return list(page.sweeps), page.next_page_token

    ctx.output.resources(collect(fetch), SWEEP_COLUMNS, f"sweeps in {ctx.workspace}")
    return 0


def list_trials(ctx: Context) -> int:
    client = ctx.client
    parent = sweep_name(ctx, ctx.args.name)

    def fetch(token: str, size: int) -> tuple[list[sweep_pb2.Trial], str]:
        page: sweep_pb2.ListTrialsResponse = client.call(
            client.sweeps.ListTrials,
            sweep_pb2.ListTrialsRequest(parent=parent, page_token=token, page_size=size),
        )
        return list(page.trials), page.next_page_token

    ctx.output.resources(collect(fetch), TRIAL_COLUMNS, "trials")
    return 0
