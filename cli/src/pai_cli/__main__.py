"""`python -m pai_cli`: the same as the `pai` script."""

from __future__ import annotations

import sys

from pai_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
