"""The search service: catalog search kept in sync from product events.

Two engines sit behind one :class:`~services.search.backend.SearchBackend`: Elasticsearch
for production scale and PostgreSQL full-text search (tsvector + pg_trgm) as the embedded
default, so a local run needs nothing but the database the other services already use.
"""
