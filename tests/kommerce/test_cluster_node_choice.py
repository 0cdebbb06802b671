"""Where ``kommerce up --cluster`` runs the shop's Pods: a real node when the machine can
run one, kwok otherwise (saying why), and never kwok in silence when a real one was
asked for."""

from __future__ import annotations

import pytest

from kommerce.platform.real_node import ClusterNode, choose_node

NO_ROOT = "a real node needs root (containers, a bridge and iptables rules)"


def test_auto_takes_the_real_node_when_this_machine_can_run_one() -> None:
    assert choose_node(ClusterNode.AUTO, None) == (ClusterNode.REAL, None)


def test_auto_falls_back_to_kwok_and_says_why() -> None:
    node, message = choose_node(ClusterNode.AUTO, NO_ROOT)
    assert node is ClusterNode.KWOK
    assert message is not None and NO_ROOT in message and "Pods run nothing" in message


def test_a_real_node_asked_for_where_none_can_run_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="--node real: a real node needs root"):
        choose_node(ClusterNode.REAL, NO_ROOT)


def test_kwok_asked_for_is_kwok_even_where_a_real_node_could_run() -> None:
    assert choose_node(ClusterNode.KWOK, None) == (ClusterNode.KWOK, None)
