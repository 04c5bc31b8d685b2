"""A service that dies at once, for the restart-backoff test."""

import sys

if __name__ == "__main__":
    print("fake crash: giving up", flush=True)
    sys.exit(3)
