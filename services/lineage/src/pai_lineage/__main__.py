"""`python -m pai_lineage`: run lineage until SIGTERM or Ctrl-C."""

from __future__ import annotations

from pai_common import service
from pai_lineage.bootstrap import build


def main() -> None:
    service.serve("lineage", build)


if __name__ == "__main__":
    main()
