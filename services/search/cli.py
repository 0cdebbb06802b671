"""``python -m services.search serve|rebuild``.

``rebuild`` is the full rebuild for operators: it migrates, then builds a new index from the
service's document store and switches the alias to it while the running service keeps
answering from the old one. ``--from-catalog`` first reads every product from the product
service (``KOMMERCE_PRODUCT_SERVICE_URL``) into the store, for a store that lost products
(the service does this by itself at start-up when its store is empty).
"""

from __future__ import annotations

import asyncio

import typer

from services.core import migrations
from services.core.app import serve
from services.core.db import Database
from services.core.http import HttpClients
from services.search.app import create_app, make_backend
from services.search.catalog import catalog_pages
from services.search.models import MIGRATIONS
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings

cli = typer.Typer(help="The search service.", no_args_is_help=True)


@cli.command("serve")
def serve_command() -> None:
    """Serve the API (and run the product-event consumer) with the environment's settings."""
    serve(create_app())


async def rebuild_index(settings: SearchSettings, from_catalog: bool = False) -> int:
    database = Database.from_settings(settings)
    backend = make_backend(settings, database)
    http = HttpClients(user_agent=f"kommerce-{settings.service_name}-cli")
    try:
        await migrations.upgrade(database, MIGRATIONS)
        await backend.start()
        indexer = SearchIndexer(database, backend)
        if from_catalog:
            if settings.product_service_url is None:
                raise typer.BadParameter("--from-catalog needs KOMMERCE_PRODUCT_SERVICE_URL")
            product = http.client("product", settings.product_service_url)
            await indexer.load_catalog(catalog_pages(product))
        return await indexer.rebuild()
    finally:
        await http.aclose()
        await backend.close()
        await database.dispose()


@cli.command("rebuild")
def rebuild_command(
    from_catalog: bool = typer.Option(
        False, "--from-catalog", help="First read every product from the product service."),
) -> None:
    """Rebuild the search index from the document store, switching it in atomically."""
    settings = SearchSettings()
    count = asyncio.run(rebuild_index(settings, from_catalog))
    typer.echo(f"rebuilt {settings.search_backend} index: {count} documents")
