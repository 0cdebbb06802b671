"""The product service: catalog, prices and inventory reservations, routed by the shard map."""
