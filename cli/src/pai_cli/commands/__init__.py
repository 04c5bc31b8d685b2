"""One module per group of `pai` commands; each has a `register(subparsers)`."""
