"""The `pai` command: the platform's control plane from a terminal."""
