"""`pai`: the command line of the pai ML platform.

Every command takes `--output table|json`, `--endpoint` and `--api-key`; without the last two
the CLI reads `PAI_ENDPOINT` / `PAI_API_KEY`, then `$PAI_HOME/credentials`. Errors are one clear
message and exit code 1 (2 for a wrong command line), never a traceback (unless PAI_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pai_cli.commands import (
    account,
    audit,
    gateway,
    jobs,
    keys,
    lineage,
    scheduler,
    status,
    sweeps,
    users,
    workspaces,
)
from pai_cli.commands.common import Context, Handler, global_options
from pai_cli.errors import EXIT_FAILURE, CliError

_EPILOG = """\
first steps:
  make up                              start pai on this machine (writes ~/.pai/credentials)
  pai status                           is everything up?
  pai workspace create ml              a workspace
  pai user create alice --email alice@example.com
  pai member add alice --role developer --workspace ml
  pai key create --user alice          an API key for alice (the secret is shown once)

the scheduler (gpu in cards, cpu in cores, memory with Ki/Mi/Gi/Ti):
  pai quota create gpu/ml --workspace ml --min gpu=4,cpu=16,memory=64Gi --max gpu=8
  pai quota list                       every group's quotas and their GPU use
  pai quota usage gpu/ml               admitted, borrowed, lent, pending, available per resource
  pai node list                        nodes, what they have and what is in use
  pai queue list --workspace ml        pending workloads in queue order, and why each waits

training jobs (dlc):
  pai job submit mnist --workers 2 --code examples/train_mnist_ddp --command "python train.py" --wait
  pai job list                         jobs, their state and why
  pai job logs mnist -f                every replica's output, as it is written
  pai job metrics mnist --png loss.png what the training code reported, as a table and a plot
  pai job stop mnist                   every replica is stopped
  pai sweep create lr -f examples/train_mnist_ddp/sweep.yaml --code examples/train_mnist_ddp --wait
  pai sweep trials lr                  each trial's parameters and objective value

data and models (lineage):
  pai dataset create digits --uri ./data/digits      register a dataset (version 1)
  pai job submit train ... --dataset digits --output-model digits-net
  pai model versions digits-net        versions registered by jobs, with their metrics
  pai lineage show model digits-net    dataset version → job → model version (--format dot|mermaid)

configuration: --endpoint/--api-key, else PAI_ENDPOINT/PAI_API_KEY, else $PAI_HOME/credentials
(PAI_HOME defaults to ~/.pai); PAI_WORKSPACE sets the default workspace.
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="pai",
        description="Control the pai ML platform.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_options(suppress=False)],
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    status.register(subparsers)
    account.register(subparsers)
    workspaces.register(subparsers)
    users.register(subparsers)
    keys.register(subparsers)
    audit.register(subparsers)
    gateway.register(subparsers)
    scheduler.register(subparsers)
    jobs.register(subparsers)
    sweeps.register(subparsers)
    lineage.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the `pai` script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse has already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
    ctx = Context(args)
    try:
        handler: Handler = args.handler
        return handler(ctx)
    except CliError as error:
        sys.stderr.write(f"error: {error}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # `pai ... | head`: the reader left; don't complain at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as error:  # e.g. the credentials file cannot be written
        sys.stderr.write(f"error: {error}\n")
        return EXIT_FAILURE
    except Exception as error:  # a bug in pai: say so in one line; PAI_DEBUG=1 shows the traceback
        if os.environ.get("PAI_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(error).__name__}: {error} (PAI_DEBUG=1 shows where)\n")
        return EXIT_FAILURE
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
