"""``python -m services.search serve|rebuild``.

``rebuild`` is the full rebuild for operators: it migrates, then builds a new index from the
service's document store and switches the alias to it while the running service keeps
answering from the old one.
"""

from __future__ import annotations

import asyncio

import typer

from services.core import migrations
from services.core.app import serve
from services.core.db import Database
from services.search.app import create_app, make_backend
from services.search.models import MIGRATIONS
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings

cli = typer.Typer(help="The search service.", no_args_is_help=True)


@cli.command("serve")
def serve_command() -> None:
    """Serve the API (and run the product-event consumer) with the environment's settings."""
    serve(create_app())


async def rebuild_index(settings: SearchSettings) -> int:
    database = Database.from_settings(settings)
    backend = make_backend(settings, database)
    try:
        await migrations.upgrade(database, MIGRATIONS)
        await backend.start()
        return await SearchIndexer(database, backend).rebuild()
    finally:
        await backend.close()
        await database.dispose()


@cli.command("rebuild")
def rebuild_command() -> None:
    """Rebuild the search index from the document store, switching it in atomically."""
    settings = SearchSettings()
    count = asyncio.run(rebuild_index(settings))
    typer.echo(f"rebuilt {settings.search_backend} index: {count} documents")
