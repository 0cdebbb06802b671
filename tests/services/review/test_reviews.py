"""Review rules: one per user and product, author-only edits, moderation transitions, the
automatic screen, helpful votes, the cached rating summary and the events published."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from .conftest import Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_user_reviews_a_product_once(service: Service) -> None:
    product, shopper = uuid.uuid4(), service.shopper()
    await service.review(product, shopper, rating=4, title="Good", body="Works well")
    again = await service.client.post(f"/products/{product}/reviews", headers=shopper,
                                      json={"rating": 5})
    assert again.status_code == 409 and again.json()["code"] == "already_reviewed"


@pytest.mark.parametrize("rating", [0, 6, -1, 4.5])
async def test_ratings_are_one_to_five_stars(service: Service, rating: float) -> None:
    response = await service.client.post(f"/products/{uuid.uuid4()}/reviews",
                                         headers=service.shopper(), json={"rating": rating})
    assert response.status_code == 422


async def test_writing_needs_a_signed_in_user(service: Service) -> None:
    response = await service.client.post(f"/products/{uuid.uuid4()}/reviews",
                                         json={"rating": 5})
    assert response.status_code == 401


async def test_only_the_author_edits_and_the_author_or_an_admin_deletes(
        service: Service) -> None:
    product, author = uuid.uuid4(), service.shopper()
    review = await service.review(product, author, rating=2)
    url = f"/reviews/{review['id']}"
    other = service.shopper()
    assert (await service.client.patch(url, headers=other, json={"rating": 5})).status_code \
        == 403
    edited = await service.client.patch(url, headers=author, json={"rating": 3})
    assert edited.status_code == 200 and edited.json()["rating"] == 3
    assert (await service.client.delete(url, headers=other)).status_code == 403
    assert (await service.client.delete(url, headers=author)).status_code == 204
    assert (await service.client.get(url)).status_code == 404
    second = await service.review(product, author, rating=1)
    assert (await service.client.delete(f"/reviews/{second['id']}",
                                        headers=service.admin())).status_code == 204


async def test_the_screen_rejects_banned_words_and_queues_links(service: Service) -> None:
    product = uuid.uuid4()
    clean = await service.review(product, service.shopper(), body="Lovely colour")
    banned = await service.review(product, service.shopper(), body="Total SCAM, avoid")
    linked = await service.review(product, service.shopper(),
                                  body="Cheaper at https://elsewhere.example")
    assert clean["status"] == "approved"
    assert banned["status"] == "rejected" and banned["flags"] == ["banned_words"]
    assert linked["status"] == "pending" and linked["flags"] == ["link"]
    listed = (await service.client.get(f"/products/{product}/reviews")).json()
    assert [r["id"] for r in listed["items"]] == [clean["id"]]
    queue = (await service.client.get("/admin/reviews", headers=service.admin())).json()
    assert linked["id"] in {r["id"] for r in queue["items"]}
    # The same queue where the gateway reaches it (/api/reviews/...), for admins only.
    gateway_path = "/reviews/moderation/queue"
    assert (await service.client.get(gateway_path, headers=service.admin())).json() == queue
    assert (await service.client.get(gateway_path,
                                     headers=service.shopper())).status_code == 403


async def test_an_edit_that_trips_the_screen_unpublishes_the_review(service: Service) -> None:
    product, author = uuid.uuid4(), service.shopper()
    review = await service.review(product, author, rating=5, body="Great")
    edited = await service.client.patch(f"/reviews/{review['id']}", headers=author,
                                        json={"body": "rubbish, go to www.other.example"})
    assert edited.json()["status"] == "rejected"
    assert (await service.rating(product))["count"] == 0


@pytest.mark.parametrize("path", ["/admin/reviews/{id}/moderation",
                                  "/reviews/{id}/moderation"])  # the second via the gateway
async def test_moderation_transitions(service: Service, path: str) -> None:
    product = uuid.uuid4()
    review = await service.review(product, service.shopper(), body="see www.shop.example")
    url = path.format(id=review["id"])
    admin = service.admin()
    shopper = service.shopper()
    assert (await service.client.post(url, headers=shopper,
                                      json={"decision": "approved"})).status_code == 403
    approved = await service.client.post(url, headers=admin, json={"decision": "approved"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    again = await service.client.post(url, headers=admin, json={"decision": "approved"})
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    back = await service.client.post(url, headers=admin, json={"decision": "pending"})
    assert back.status_code == 409
    rejected = await service.client.post(url, headers=admin,
                                         json={"decision": "rejected", "reason": "spam"})
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["moderation_reason"] == "spam"


async def test_unpublished_reviews_are_visible_only_to_author_and_admins(
        service: Service) -> None:
    author = service.shopper()
    review = await service.review(uuid.uuid4(), author, body="www.x.example")
    url = f"/reviews/{review['id']}"
    assert (await service.client.get(url)).status_code == 404
    assert (await service.client.get(url, headers=service.shopper())).status_code == 404
    assert (await service.client.get(url, headers=author)).status_code == 200
    assert (await service.client.get(url, headers=service.admin())).status_code == 200


async def test_helpful_votes_one_per_user_never_on_ones_own(service: Service) -> None:
    product, author = uuid.uuid4(), service.shopper()
    review = await service.review(product, author)
    url = f"/reviews/{review['id']}/vote"
    own = await service.client.put(url, headers=author, json={"helpful": True})
    assert own.status_code == 403 and own.json()["code"] == "own_review"
    voter = service.shopper()
    await service.client.put(url, headers=voter, json={"helpful": True})
    twice = await service.client.put(url, headers=voter, json={"helpful": True})
    assert twice.json()["helpful_count"] == 1
    changed = await service.client.put(url, headers=voter, json={"helpful": False})
    assert changed.json()["helpful_count"] == 0 and changed.json()["unhelpful_count"] == 1
    await service.client.put(url, headers=service.shopper(), json={"helpful": True})
    assert (await service.client.delete(url, headers=voter)).status_code == 204
    final = (await service.client.get(f"/reviews/{review['id']}")).json()
    assert (final["helpful_count"], final["unhelpful_count"]) == (1, 0)


async def test_votes_only_on_published_reviews(service: Service) -> None:
    review = await service.review(uuid.uuid4(), service.shopper(), body="www.a.example")
    response = await service.client.put(f"/reviews/{review['id']}/vote",
                                        headers=service.shopper(), json={"helpful": True})
    assert response.status_code == 404


async def test_reviews_sort_by_helpfulness(service: Service) -> None:
    product = uuid.uuid4()
    first = await service.review(product, service.shopper())
    second = await service.review(product, service.shopper())
    await service.client.put(f"/reviews/{first['id']}/vote", headers=service.shopper(),
                             json={"helpful": True})
    helpful = (await service.client.get(f"/products/{product}/reviews",
                                        params={"sort": "helpful"})).json()
    assert [r["id"] for r in helpful["items"]] == [first["id"], second["id"]]
    newest = (await service.client.get(f"/products/{product}/reviews")).json()
    assert [r["id"] for r in newest["items"]] == [second["id"], first["id"]]


async def test_rating_summary_counts_approved_reviews_and_stays_current(
        service: Service) -> None:
    product = uuid.uuid4()
    empty = await service.rating(product)
    assert empty["count"] == 0 and empty["average"] is None
    author = service.shopper()
    mine = await service.review(product, author, rating=5)
    await service.review(product, service.shopper(), rating=4)
    await service.review(product, service.shopper(), rating=4)
    await service.review(product, service.shopper(), rating=1, body="www.pending.example")
    summary = await service.rating(product)  # cached from here on
    assert summary["count"] == 3 and summary["average"] == 4.33
    assert summary["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 2, "5": 1}
    await service.client.patch(f"/reviews/{mine['id']}", headers=author, json={"rating": 2})
    assert (await service.rating(product))["average"] == 3.33
    await service.client.delete(f"/reviews/{mine['id']}", headers=author)
    assert (await service.rating(product))["distribution"]["2"] == 0
    assert (await service.rating(product))["count"] == 2


async def test_events_announce_reviews_approvals_and_rating_changes(service: Service) -> None:
    product = uuid.uuid4()
    await service.review(product, service.shopper(), rating=5)
    pending = await service.review(product, service.shopper(), rating=3,
                                   body="www.link.example")
    await service.client.post(f"/admin/reviews/{pending['id']}/moderation",
                              headers=service.admin(), json={"decision": "approved"})
    database = service.app.state.runtime.require_database()
    async with database.session() as session:
        rows = (await session.execute(text(
            "SELECT event_type AS type, envelope -> 'payload' AS payload FROM outbox "
            "WHERE event_key = :key ORDER BY seq"),
            {"key": str(product)})).all()
    types = [row.type for row in rows]
    assert types == ["review.created", "review.approved", "rating.changed",
                     "review.created", "review.approved", "rating.changed"]
    assert rows[-1].payload["count"] == 2 and rows[-1].payload["average"] == 4.0
