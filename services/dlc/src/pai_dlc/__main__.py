"""`python -m pai_dlc`: run dlc until SIGTERM or Ctrl-C."""

from __future__ import annotations

from pai_common import service
from pai_dlc.bootstrap import build


def main() -> None:
    service.serve("dlc", build)


if __name__ == "__main__":
    main()
