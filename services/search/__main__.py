"""``python -m services.search``: serve, or ``reindex`` (a full rebuild through the alias)."""

from services.search.cli import cli

cli()
