"""What a shopper gets from /search and /search/autocomplete, on every engine.

The same tests run against PostgreSQL full-text search and the real Elasticsearch node
(``seeded`` is parametrised), so the engines are held to one behaviour.
"""

from __future__ import annotations

import uuid
from typing import Any

from .conftest import BY_NAME, CATALOG, Service


def names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["items"]]


def facet(page: dict[str, Any], name: str) -> dict[str, int]:
    return {f["value"]: f["count"] for f in page["facets"][name]}


async def test_products_matching_every_word_in_the_name_rank_first(seeded: Service) -> None:
    page = await seeded.search(q="running shoes")
    assert set(names(page)[:2]) == {"Trail Running Shoes", "Road Running Shoes"}
    assert set(names(page)[2:4]) == {"Leather Dress Shoes", "Running Socks"}
    # "running" only in its description: after every product with a query word in its name
    assert names(page)[4:] == ["Water Bottle"]


async def test_a_word_in_the_name_outranks_the_same_word_in_a_description(
        seeded: Service) -> None:
    ranked = names(await seeded.search(q="running"))
    assert set(ranked[:3]) == {"Trail Running Shoes", "Road Running Shoes", "Running Socks"}
    assert ranked[3:] == ["Water Bottle"]


async def test_brand_names_are_searchable(seeded: Service) -> None:
    ranked = names(await seeded.search(q="sonica"))
    assert set(ranked) == {"Wireless Headphones", "Bluetooth Speaker"}


async def test_a_misspelt_word_still_finds_the_product(seeded: Service) -> None:
    assert names(await seeded.search(q="hedphones"))[0] == "Wireless Headphones"
    assert names(await seeded.search(q="keybord"))[0] == "Mechanical Keyboard"
    assert "Trail Running Shoes" in names(await seeded.search(q="runing"))


async def test_nonsense_finds_nothing(seeded: Service) -> None:
    page = await seeded.search(q="xylophone")
    assert page["total"] == 0 and page["items"] == []


async def test_no_words_browses_the_whole_catalog_newest_first(seeded: Service) -> None:
    page = await seeded.search(size=100)
    assert page["total"] == len(CATALOG)
    assert names(page) == [p["name"] for p in CATALOG]  # CATALOG is newest first


async def test_facets_count_the_filtered_results(seeded: Service) -> None:
    page = await seeded.search(brand="Stride")
    assert page["total"] == 3
    assert facet(page, "category") == {"shoes": 2, "socks": 1}
    assert facet(page, "brand") == {"Stride": 3}
    prices = {p["key"]: p["count"] for p in page["facets"]["price"]}
    assert prices == {"under-25": 1, "25-50": 0, "50-100": 1, "100-250": 1, "250-and-up": 0}
    colors = {f["value"]: f["count"] for f in page["facets"]["attributes"]["color"]}
    assert colors == {"red": 1, "blue": 1, "black": 1, "white": 1}
    assert {f["value"] for f in page["facets"]["attributes"]["size"]} == {"42", "43"}


async def test_facet_values_are_ordered_by_count_then_value(seeded: Service) -> None:
    page = await seeded.search(size=1)
    assert [(c["value"], c["count"]) for c in page["facets"]["category"]] == [
        ("electronics", 4), ("shoes", 3), ("sports", 2),
        ("accessories", 1), ("apparel", 1), ("socks", 1)]


async def test_values_of_one_filter_are_alternatives_and_filters_combine(
        seeded: Service) -> None:
    black = await seeded.search(category="electronics", attr="color:black")
    assert set(names(black)) == {"Wireless Headphones", "Mechanical Keyboard"}
    either = await seeded.search(category="electronics", attr=["color:black", "color:red"])
    assert set(names(either)) == {"Wireless Headphones", "Mechanical Keyboard",
                                  "Bluetooth Speaker"}
    two_categories = await seeded.search(category=["socks", "sports"])
    assert two_categories["total"] == 3


async def test_price_and_stock_filters(seeded: Service) -> None:
    priced = await seeded.search(price_min=2500, price_max=10000, size=50)
    assert set(names(priced)) == {"Trail Running Shoes", "Bluetooth Speaker", "Laptop Stand",
                                  "Yoga Mat", "Mechanical Keyboard"}
    in_stock = await seeded.search(in_stock="true", size=50)
    assert "Yoga Mat" not in names(in_stock) and in_stock["total"] == len(CATALOG) - 1


async def test_sorting_by_price(seeded: Service) -> None:
    ascending = names(await seeded.search(sort="price_asc", size=3))
    assert ascending == ["Running Socks", "Water Bottle", "Cotton T-Shirt"]
    descending = names(await seeded.search(sort="price_desc", size=2))
    assert descending == ["Laptop Pro 14", "Wireless Headphones"]


async def test_pages_cover_every_result_once(seeded: Service) -> None:
    seen: list[str] = []
    for page_number in (1, 2, 3):
        page = await seeded.search(size=5, page=page_number)
        assert page["total"] == len(CATALOG)
        seen += [item["id"] for item in page["items"]]
    assert sorted(seen) == sorted(BY_NAME.values())
    assert (await seeded.search(size=5, page=4))["items"] == []


async def test_autocomplete_completes_word_prefixes(seeded: Service) -> None:
    async def suggest(q: str) -> set[str]:
        response = await seeded.client.get("/search/autocomplete", params={"q": q})
        assert response.status_code == 200, response.text
        return {s["name"] for s in response.json()["suggestions"]}

    assert await suggest("lap") == {"Laptop Pro 14", "Laptop Stand"}
    assert await suggest("wireless head") == {"Wireless Headphones"}
    assert await suggest("Run") == {"Trail Running Shoes", "Road Running Shoes",
                                    "Running Socks"}
    assert await suggest("qqqz") == set()


async def test_autocomplete_respects_the_limit(seeded: Service) -> None:
    response = await seeded.client.get("/search/autocomplete", params={"q": "s", "limit": 2})
    assert len(response.json()["suggestions"]) == 2


async def test_a_shoppers_recent_categories_rank_higher(seeded: Service) -> None:
    """"black" matches products in several categories equally; a shopper who has been
    clicking electronics sees electronics first; without that history, another category
    leads."""
    shopper = seeded.token(f"shopper-{uuid.uuid4().hex[:6]}")
    for name in ("Wireless Headphones", "Mechanical Keyboard"):
        search = await seeded.client.get("/search", params={"q": "apex sonica"},
                                          headers=shopper)
        await seeded.client.post("/search/clicks", headers=shopper, json={
            "query_id": search.json()["query_id"], "product_id": BY_NAME[name],
            "position": 1})
    personal = await seeded.client.get("/search", params={"q": "shoes laptop"},
                                        headers=shopper)
    assert personal.json()["items"][0]["category"] == "electronics"
    anonymous = await seeded.search(q="shoes laptop")
    assert anonymous["items"][0]["category"] != "electronics"
