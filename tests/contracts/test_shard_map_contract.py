"""The shard map: what the ShardLayout operator writes is what the product service loads,
both place every category (listed or not) on the same shard, and a bad map is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kommerce.contracts.shard_map import (
    SHARD_MAP_KEY,
    SHARD_MAP_VERSION_ANNOTATION,
    ShardMap,
    content_version,
    parse_shard_map_json,
    rendezvous_shard,
)
from operators.shardlayout.render import layout_map, render_shard_map
from operators.shardlayout.spec import ShardLayoutSpec
from services.core.shardmap import parse_shard_map

PROPERTIES = settings(max_examples=80, deadline=None)
categories = st.from_regex(r"[a-z0-9]([-a-z0-9_]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def layouts(draw: st.DrawFn) -> ShardLayoutSpec:
    count = draw(st.integers(1, 5))
    owned = draw(st.lists(categories, unique=True, max_size=12))
    places = [draw(st.integers(0, count - 1)) for _ in owned]
    shards = [{"name": f"shard-{index}", "database": {"name": f"catalog-{index}"},
               "categories": [c for c, at in zip(owned, places, strict=True) if at == index]}
              for index in range(count)]
    return ShardLayoutSpec.model_validate({
        "shards": draw(st.permutations(shards)),
        "defaultShard": f"shard-{draw(st.integers(0, count - 1))}",
        "unlistedCategories": draw(st.sampled_from(["DefaultShard", "Hash"]))})


@PROPERTIES
@given(layouts(), st.lists(categories, max_size=10))
def test_the_service_places_every_category_where_the_operator_does(
        spec: ShardLayoutSpec, asked: list[str]) -> None:
    config_map = render_shard_map("catalog", "shop", spec, "uid-1")

    loaded = parse_shard_map(config_map["data"][SHARD_MAP_KEY])

    assert loaded.version == config_map["metadata"]["annotations"][SHARD_MAP_VERSION_ANNOTATION]
    for shard in spec.shards:
        for category in shard.categories:
            asked.append(category)
    for category in asked:
        assert loaded.shard_for(category) == spec.shard_for(category)


@PROPERTIES
@given(layouts())
def test_a_map_round_trips_and_its_version_is_its_content(spec: ShardLayoutSpec) -> None:
    written = layout_map("catalog", spec)

    again = parse_shard_map_json(written.to_json())

    assert again == written
    assert again.to_json() == written.to_json()
    assert again.version == content_version(again.wire())


def test_the_hash_moves_only_what_lands_on_a_new_shard() -> None:
    names = [f"c{index}" for index in range(200)]
    before = {c: rendezvous_shard(c, ["a", "b", "c"]) for c in names}
    after = {c: rendezvous_shard(c, ["c", "b", "a", "d"]) for c in names}
    assert {c for c in names if before[c] != after[c]} == {c for c in names if after[c] == "d"}


BASE: dict[str, Any] = {"version": "v1", "defaultShard": "shard-1",
                        "shards": [{"name": "shard-1", "dsn": "postgresql://a"},
                                   {"name": "shard-2", "dsn": "postgresql://b",
                                    "categories": ["toys"]}]}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"defaultShard": "shard-9"}, "default shard 'shard-9' is not among the shards"),
    ({"categories": {"toys": "shard-1"}}, "category 'toys' is placed on both 'shard-2' and "
                                          "'shard-1'"),
    ({"categories": {"games": "shard-7"}}, "category 'games' is placed on unknown shard "
                                           "'shard-7'"),
    ({"hashAlgorithm": "md5-modulo"}, "unknown hash algorithm 'md5-modulo'"),
    ({"format": 2}, "Input should be less than or equal to 1"),
    ({"shards": [{"name": "shard-1"}]}, "shard 'shard-1' needs exactly one of dsn, dsnEnv, "
                                        "dsnFile, databaseSecret"),
    ({"shard": "typo"}, "Extra inputs are not permitted"),
])
def test_a_bad_map_is_refused_with_what_is_wrong(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ShardMap.model_validate({**BASE, **changes})
    assert problem in str(refused.value)


def test_a_key_given_twice_is_refused() -> None:
    text = json.dumps(BASE)[:-1] + ', "defaultShard": "shard-2"}'
    with pytest.raises(ValueError, match="duplicate key 'defaultShard'"):
        parse_shard_map_json(text)
