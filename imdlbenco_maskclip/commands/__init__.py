"""One module per ``benco`` subcommand, each with ``configure(parser)`` and ``run(args) -> int``."""
