"""Subcommands of `rating-engine`; each module exposes `register(subparsers)`."""
