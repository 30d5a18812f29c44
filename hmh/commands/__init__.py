"""One module per ``hmh`` command group; each defines ``register(subparsers)`` and is discovered by the CLI."""
