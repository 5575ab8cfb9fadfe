"""Per-field precision, recall and F1 of structured answers, as slot filling scores them."""

from __future__ import annotations

import pytest

from gateway.jobs.fields import field_scores, leaves


def test_leaves_are_dotted_paths_of_every_value() -> None:
    assert leaves({"intent": "GetWeather", "slots": {"city": "Paris"}, "tags": ["a"]}) == {
        "intent": "GetWeather",
        "slots.city": "Paris",
        "tags.0": "a",
    }
    assert leaves({"slots": {}}) == {}


def test_a_wrong_value_is_a_false_positive_and_a_false_negative() -> None:
    gold = [
        {"intent": "GetWeather", "slots": {"city": "Paris", "timeRange": "noon"}},
        {"intent": "PlayMusic", "slots": {"artist": "Nina"}},
        {"intent": "PlayMusic", "slots": {}},
    ]
    pred = [
        {"intent": "GetWeather", "slots": {"city": "Rome", "timeRange": "noon"}},  # city wrong
        None,  # did not parse: predicts nothing
        {"intent": "PlayMusic", "slots": {"artist": "Nina"}},  # a slot that is not there
    ]
    scores = field_scores(gold, pred)
    city = scores["fields"]["slots.city"]
    assert (city["precision"], city["recall"], city["support"]) == (0.0, 0.0, 1)
    assert scores["fields"]["slots.timeRange"]["f1"] == 1.0
    intent = scores["fields"]["intent"]
    assert intent["precision"] == 1.0 and intent["recall"] == pytest.approx(2 / 3)
    artist = scores["fields"]["slots.artist"]  # tp 0 (record 2 unparsed), fp 1, fn 1
    assert artist["precision"] == 0.0 and artist["support"] == 1
    slots = scores["groups"]["slots"]  # tp 1 (timeRange); fp 2 (city, artist); fn 2
    assert slots["precision"] == pytest.approx(1 / 3) and slots["recall"] == pytest.approx(1 / 3)
    assert slots["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    micro = scores["micro"]  # tp 3, fp 2, fn 3
    assert micro["f1"] == pytest.approx(6 / (6 + 2 + 3)) and micro["support"] == 6
