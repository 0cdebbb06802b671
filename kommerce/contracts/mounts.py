"""Where a Pod finds what the operators write for it.

The operators mount their ConfigMaps and Secrets at these paths and name them in the
container's environment; the services read the environment (their settings), and fall back
to these paths. One definition, so a moved mount cannot leave a reader behind.
"""

from __future__ import annotations

from kommerce.contracts.shard_map import DEFAULT_SECRETS_DIR

CONFIG_ROOT = "/etc/kommerce"
#: The CircuitBreakerPolicies' client settings, one file per target service.
BREAKERS_DIR = f"{CONFIG_ROOT}/circuit-breakers"
#: The gateway's route table.
ROUTE_TABLE_DIR = f"{CONFIG_ROOT}/gateway"
#: The ShardLayout's map, in the product service's Pods.
SHARD_MAP_DIR = f"{CONFIG_ROOT}/shard-map"
#: The shards' database Secrets, one folder per Secret (``<secret>/<key>``).
SECRETS_DIR = str(DEFAULT_SECRETS_DIR)
