"""The test bed's search engine is a real Elasticsearch that the official async client can
index into and search, which the catalogue search adapter's tests build on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch

from kommerce.testbed.elasticsearch import ES_VERSION, SearchEngine

pytestmark = pytest.mark.elasticsearch


@pytest.fixture
async def client(search_engine: SearchEngine) -> AsyncIterator[AsyncElasticsearch]:
    async with AsyncElasticsearch(search_engine.url) as es:
        yield es


@pytest.fixture
async def index(client: AsyncElasticsearch) -> AsyncIterator[str]:
    """An index per test, so tests sharing the session engine never see each other's docs."""
    name = f"testbed-{uuid.uuid4().hex[:12]}"
    yield name
    await client.indices.delete(index=name, ignore_unavailable=True)


async def test_an_indexed_document_is_found_by_full_text_search(
    client: AsyncElasticsearch, index: str,
) -> None:
    await client.index(index=index, id="sku-1", document={"name": "Red running shoe"},
                       refresh=True)
    await client.index(index=index, id="sku-2", document={"name": "Blue wool scarf"},
                       refresh=True)

    found = await client.search(index=index, query={"match": {"name": "shoe"}})

    assert [hit["_id"] for hit in found["hits"]["hits"]] == ["sku-1"]


async def test_the_engine_is_the_pinned_elasticsearch_release(
    client: AsyncElasticsearch,
) -> None:
    nodes = await client.nodes.info(metric="settings")

    versions = {node["version"] for node in nodes["nodes"].values()}
    assert versions == {ES_VERSION}
