"""The shard map: validation, routing, and hot reload that keeps the last good map."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import ValidationError

from services.core.shardmap import (
    ShardMap,
    ShardMapWatcher,
    load_shard_map,
    parse_shard_map,
    rendezvous_shard,
)

BASE: dict[str, Any] = {
    "format": 1,
    "layout": "catalog",
    "version": "v1",
    "defaultShard": "shard-1",
    "unlistedCategories": "DefaultShard",
    "hashAlgorithm": "rendezvous-sha256",
    "shards": [
        {"name": "shard-1", "dsn": "postgresql+asyncpg://db/catalog_1",
         "categories": ["computers", "electronics"]},
        {"name": "shard-2", "dsnEnv": "TEST_SHARD_2_DSN", "categories": ["clothing"]},
        {"name": "shard-3", "databaseSecret": {"name": "catalog-3", "key": "url"},
         "categories": ["garden", "home"]},
    ],
    "categories": {"computers": "shard-1", "electronics": "shard-1", "clothing": "shard-2",
                   "garden": "shard-3", "home": "shard-3"},
}


def shard_map(**changes: object) -> ShardMap:
    return ShardMap.model_validate({**BASE, **changes})


def test_categories_route_to_their_shard_and_others_to_the_default() -> None:
    m = shard_map()

    assert m.shard_for("electronics") == "shard-1"
    assert m.shard_for("clothing") == "shard-2"
    assert m.shard_for("garden") == "shard-3"
    assert m.shard_for("toys") == "shard-1"


def test_hash_placement_spreads_unlisted_categories_stably() -> None:
    m = shard_map(unlistedCategories="Hash")

    placed = {c: m.shard_for(c) for c in (f"category-{i}" for i in range(200))}

    assert set(placed.values()) == {"shard-1", "shard-2", "shard-3"}
    assert placed == {c: shard_map(unlistedCategories="Hash").shard_for(c) for c in placed}
    assert m.shard_for("clothing") == "shard-2"  # explicit placement wins


def test_adding_a_shard_moves_only_the_categories_it_wins() -> None:
    categories = [f"category-{i}" for i in range(300)]
    before = {c: rendezvous_shard(c, ["a", "b", "c"]) for c in categories}
    after = {c: rendezvous_shard(c, ["a", "b", "c", "d"]) for c in categories}

    moved = [c for c in categories if before[c] != after[c]]

    assert moved and all(after[c] == "d" for c in moved)


def test_placement_agrees_with_the_operators_renderer() -> None:
    operator = pytest.importorskip("operators.shardlayout.spec")
    categories = [f"category-{i}" for i in range(100)]
    shards = ["shard-1", "shard-2", "shard-3"]

    assert [rendezvous_shard(c, shards) for c in categories] == \
        [operator.rendezvous_shard(c, shards) for c in categories]


def test_the_operators_rendered_map_loads_and_routes_alike() -> None:
    spec_module = pytest.importorskip("operators.shardlayout.spec")
    render = pytest.importorskip("operators.shardlayout.render")
    spec = spec_module.ShardLayoutSpec.model_validate({
        "defaultShard": "shard-1", "unlistedCategories": "Hash",
        "shards": [{"name": "shard-1", "database": {"name": "catalog-1"},
                    "categories": ["electronics"]},
                   {"name": "shard-2", "database": {"name": "catalog-2"},
                    "categories": ["clothing"]}]})
    config_map = render.render_shard_map("catalog", "shop", spec, uid="u-1")

    loaded = parse_shard_map(config_map["data"]["shard-map.json"])

    for category in ("electronics", "clothing", "toys", "garden", "books"):
        assert loaded.shard_for(category) == spec.shard_for(category)
    assert loaded.version == config_map["metadata"]["annotations"][
        "kommerce.io/shard-map-version"]


def test_shards_may_be_written_as_an_object_keyed_by_name() -> None:
    m = ShardMap.model_validate({"version": 1, "defaultShard": "a",
                                 "shards": {"a": {"dsn": "x"}, "b": {"dsn": "y"}},
                                 "categories": {"toys": "b"}})

    assert (m.version, m.shard_for("toys"), m.shard_for("food")) == ("1", "b", "a")


def test_a_category_on_two_shards_is_refused() -> None:
    shards = [*BASE["shards"][:2], {"name": "shard-3", "dsn": "x", "categories": ["clothing"]}]

    with pytest.raises(ValidationError, match="'clothing' is placed on both"):
        shard_map(shards=shards, categories={})


def test_a_category_map_disagreeing_with_the_shard_lists_is_refused() -> None:
    with pytest.raises(ValidationError, match="'clothing' is placed on both"):
        shard_map(categories={**BASE["categories"], "clothing": "shard-1"})


def test_a_missing_default_shard_is_refused() -> None:
    with pytest.raises(ValidationError, match="default shard 'shard-9'"):
        shard_map(defaultShard="shard-9")


def test_a_category_on_an_unknown_shard_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown shard 'shard-7'"):
        shard_map(categories={"toys": "shard-7"})


def test_duplicate_shard_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="unique"):
        shard_map(shards=[{"name": "shard-1", "dsn": "a"}, {"name": "shard-1", "dsn": "b"}],
                  categories={})


def test_an_unknown_hash_algorithm_or_format_is_refused() -> None:
    with pytest.raises(ValidationError, match="hash algorithm"):
        shard_map(hashAlgorithm="md5-modulo")
    with pytest.raises(ValidationError, match="format"):
        shard_map(format=2)


def test_a_shard_needs_exactly_one_database_source() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        shard_map(shards=[{"name": "shard-1", "dsn": "a", "dsnEnv": "B"}], categories={})
    with pytest.raises(ValidationError, match="exactly one of"):
        shard_map(shards=[{"name": "shard-1"}], categories={})


def test_duplicate_keys_are_refused_rather_than_silently_overwritten() -> None:
    text = ('{"version": 1, "defaultShard": "a", "shards": [{"name": "a", "dsn": "x"}],'
            ' "categories": {"toys": "a", "toys": "a"}}')

    with pytest.raises(ValueError, match="duplicate key 'toys'"):
        parse_shard_map(text)
    with pytest.raises(ValueError, match="duplicate key 'toys'"):
        parse_shard_map("version: 1\ndefaultShard: a\nshards: [{name: a, dsn: x}]\n"
                        "categories:\n  toys: a\n  toys: a\n", yaml_format=True)


def test_database_urls_resolve_from_literal_env_or_mounted_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "catalog-3" / "url"
    secret.parent.mkdir()
    secret.write_text("postgresql+asyncpg://db/catalog_3\n")
    monkeypatch.setenv("TEST_SHARD_2_DSN", "postgresql+asyncpg://db/catalog_2")
    m = shard_map()

    assert [m.dsn_for(s, secrets_dir=tmp_path) for s in ("shard-1", "shard-2", "shard-3")] == [
        "postgresql+asyncpg://db/catalog_1", "postgresql+asyncpg://db/catalog_2",
        "postgresql+asyncpg://db/catalog_3"]
    with pytest.raises(LookupError, match="not mounted"):
        m.dsn_for("shard-3", secrets_dir=tmp_path / "elsewhere")


def test_yaml_and_json_files_load_alike(tmp_path: Path) -> None:
    (tmp_path / "map.json").write_bytes(orjson.dumps(BASE))
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(BASE))

    assert load_shard_map(tmp_path / "map.json") == load_shard_map(tmp_path / "map.yaml")


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)  # atomically, as the kubelet swaps a ConfigMap


def test_a_new_version_takes_effect_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "shard-map.json"
    _write(path, BASE)
    watcher = ShardMapWatcher(tmp_path)  # a mounted ConfigMap folder
    assert watcher.shard_for("clothing") == "shard-2"

    moved = [dict(s, categories=[c for c in s["categories"] if c != "clothing"])
             for s in BASE["shards"]]
    moved[2]["categories"].append("clothing")
    _write(path, {**BASE, "version": "v2", "shards": moved,
                  "categories": {**BASE["categories"], "clothing": "shard-3"}})

    assert watcher.check()
    assert watcher.shard_for("clothing") == "shard-3"
    assert watcher.value.version == "v2"


def test_an_invalid_map_keeps_the_old_one_in_force(tmp_path: Path) -> None:
    path = tmp_path / "shard-map.json"
    _write(path, BASE)
    watcher = ShardMapWatcher(path)

    _write(path, {**BASE, "version": "v2", "defaultShard": "gone"})
    assert not watcher.check()
    assert watcher.value.version == "v1"
    assert watcher.last_error is not None and "default shard" in watcher.last_error

    path.write_text("{ not json")
    assert not watcher.check()
    assert watcher.shard_for("clothing") == "shard-2"


def test_changed_content_under_the_same_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shard-map.json"
    _write(path, BASE)
    watcher = ShardMapWatcher(path)

    _write(path, {**BASE, "defaultShard": "shard-2"})

    assert not watcher.check()
    assert watcher.last_error is not None and "version" in watcher.last_error
    assert watcher.shard_for("toys") == "shard-1"


async def test_the_watch_loop_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "shard-map.json"
    _write(path, BASE)
    watcher = ShardMapWatcher(path)
    task = asyncio.create_task(watcher.watch(0.02))
    try:
        _write(path, {**BASE, "version": "v5", "defaultShard": "shard-2"})
        for _ in range(100):
            if watcher.value.version == "v5":
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()

    assert watcher.shard_for("toys") == "shard-2"
