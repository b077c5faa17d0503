"""One module per CLI command; each exposes ``run(args) -> int`` (an exit code)."""
