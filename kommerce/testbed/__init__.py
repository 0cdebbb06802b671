"""Real servers on loopback for tests and local runs: build or download, cache, start, stop.

Every server here is the real program (PostgreSQL, Redis, Kafka, etcd, kube-apiserver,
stripe-mock, ...), started on free loopback ports with its data in a throwaway folder.
Builds and downloads are cached under :func:`kommerce.testbed.cache.cache_dir`, keyed by
version, so only the first run pays for them.
"""
