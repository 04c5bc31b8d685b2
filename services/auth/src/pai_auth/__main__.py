"""`python -m pai_auth`: run the auth service until SIGTERM or Ctrl-C."""

from __future__ import annotations

import functools
import os

from pai_auth.bootstrap import AuthApp, build
from pai_common import service


def main() -> None:
    given = os.environ.get("PAI_BOOTSTRAP_ADMIN_KEY", "")

    def started(app: AuthApp) -> None:
        if app.admin_key and not given:  # shown once: only its hash is stored
            print(
                f"pai auth: created platform admin users/admin; API key (shown once): {app.admin_key}",
                flush=True,
            )

    service.serve("auth", functools.partial(build, bootstrap_key=given), started)


if __name__ == "__main__":
    main()
