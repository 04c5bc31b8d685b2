"""`python -m pai_local`."""

import sys

from pai_local.cli import main

if __name__ == "__main__":
    sys.exit(main())
