"""Unit tests of routing: pins, labels, production, and the canary's share."""

from __future__ import annotations

import random

import pytest

from services.inference.routing import Router, RoutingTable
from shared.errors import InvalidArgument, NotFound, Unavailable

TABLE = RoutingTable(
    by_version={1: "v1", 2: "v2"}, by_label={"production": "v1", "canary": "v2"}, canary_weight=20
)


def test_pinned_version_and_label_go_where_they_say():
    router = Router(random.Random(1))
    assert {router.route("m", TABLE, version=2) for _ in range(50)} == {"v2"}
    assert {router.route("m", TABLE, version=1) for _ in range(50)} == {"v1"}
    assert {router.route("m", TABLE, label="production") for _ in range(50)} == {"v1"}
    assert {router.route("m", TABLE, label="canary") for _ in range(50)} == {"v2"}


def test_canary_weight_20_takes_15_to_25_percent_of_2000_unpinned_requests():
    router = Router(random.Random(7))
    served = [router.route("m", TABLE) for _ in range(2000)]
    share = served.count("v2") / len(served)
    assert 0.15 <= share <= 0.25


@pytest.mark.parametrize("weight, expected", [(0, 0.0), (100, 1.0)])
def test_canary_weight_edges(weight, expected):
    table = RoutingTable(TABLE.by_version, TABLE.by_label, canary_weight=weight)
    served = [Router(random.Random(3)).route("m", table) for _ in range(200)]
    assert served.count("v2") / 200 == expected


def test_metadata_resolution_never_follows_the_canary():
    table = RoutingTable(TABLE.by_version, TABLE.by_label, canary_weight=100)
    assert Router().route("m", table, follow_canary=False) == "v1"


def test_unknown_pins_are_not_found_on_their_field():
    with pytest.raises(NotFound) as missing_version:
        Router().route("m", TABLE, version=3)
    assert missing_version.value.field == "version"
    with pytest.raises(NotFound) as missing_label:
        Router().route("m", TABLE, label="staging")
    assert missing_label.value.field == "label"


def test_both_pins_at_once_or_a_negative_version_are_invalid():
    with pytest.raises(InvalidArgument):
        Router().route("m", TABLE, version=1, label="production")
    with pytest.raises(InvalidArgument):
        Router().route("m", TABLE, version=-1)


def test_no_production_version_is_unavailable_not_internal():
    with pytest.raises(Unavailable):
        Router().route("m", RoutingTable(by_version={2: "v2"}, by_label={"canary": "v2"}))
