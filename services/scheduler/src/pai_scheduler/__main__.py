"""`python -m pai_scheduler`: run scheduler until SIGTERM or Ctrl-C."""

from __future__ import annotations

from pai_common import service
from pai_scheduler.bootstrap import build


def main() -> None:
    service.serve("scheduler", build)


if __name__ == "__main__":
    main()
