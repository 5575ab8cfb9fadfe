"""Field-level confidence: spans of JSON members, their tokens' probability, the least sure."""

from __future__ import annotations

import math

import pytest

from gateway.engines.base import TokenDelta
from gateway.pipeline.fields import field_confidences, least_sure, member_spans

ANSWER = '{"intent":"GetWeather","slots":{"city":"Paris","timeRange":"noon"}}'


def test_every_member_is_spanned_key_to_value_nested_ones_too() -> None:
    spans = {path: ANSWER[a:b] for path, a, b in member_spans(ANSWER)}
    assert spans == {
        "intent": '"intent":"GetWeather"',
        "slots": '"slots":{"city":"Paris","timeRange":"noon"}',
        "slots.city": '"city":"Paris"',
        "slots.timeRange": '"timeRange":"noon"',
    }
    spaced = '{ "a" : [1, {"b": "x\\"}"}], "c": true }'
    assert {p: spaced[a:b] for p, a, b in member_spans(spaced)} == {
        "a": '"a" : [1, {"b": "x\\"}"}]',
        "a.1.b": '"b": "x\\"}"',
        "c": '"c": true',
    }
    for broken in ('{"a":', "card_arrival", '{"a":1} trailing', ""):
        assert member_spans(broken) == []


def test_a_field_is_as_sure_as_the_tokens_that_spell_it() -> None:
    pieces = [
        ('{"intent":"', 0.99),
        ("GetWeather", 0.9),
        ('","slots":{"', 0.98),
        ("city", 0.7),
        ('":"', 0.99),
        ("Par", 0.5),
        ("is", 0.95),
        ('","timeRange":"noon"}}', 0.97),
    ]
    deltas = [TokenDelta(i, t, math.log(p)) for i, (t, p) in enumerate(pieces)]
    deltas.append(TokenDelta(99, "", math.log(0.9), end=True))  # spells nothing
    fields = field_confidences(deltas)
    assert fields["slots.city"] == pytest.approx(0.98 * 0.7 * 0.99 * 0.5 * 0.95 * 0.97)
    assert fields["intent"] == pytest.approx(0.99 * 0.9 * 0.98)  # straddling tokens count
    assert least_sure(fields) == ("slots.city", pytest.approx(fields["slots.city"]))
    scaled = [TokenDelta(d.token_id, d.text, d.logprob, scaled_logprob=-0.01) for d in deltas]
    assert field_confidences(scaled)["intent"] == pytest.approx(math.exp(-0.03))
    assert field_confidences([TokenDelta(0, "card_arrival", -0.1)]) == {}
    assert least_sure({}) is None
