"""``fit``: the served answer cut to the client's max_tokens and stop, as OpenAI cuts it."""

from __future__ import annotations

import pytest

from gateway.engines.base import TokenDelta
from gateway.pipeline.reply import ReplyOptions, fit


def tokens(*pieces: str) -> tuple[TokenDelta, ...]:
    return tuple(
        TokenDelta(token_id=i, text=p, token=p, logprob=-0.1 * i) for i, p in enumerate(pieces)
    )


CARD = tokens("card", "_", "arr", "ival")


def test_no_options_change_nothing() -> None:
    reply = fit("card_arrival", CARD, "stop", ReplyOptions())
    assert (reply.text, reply.tokens, reply.finish_reason) == ("card_arrival", CARD, "stop")


@pytest.mark.parametrize(("limit", "text"), [(1, "card"), (3, "card_arr")])
def test_max_tokens_cuts_with_length(limit: int, text: str) -> None:
    reply = fit("card_arrival", CARD, "stop", ReplyOptions(max_tokens=limit))
    assert (reply.text, reply.finish_reason) == (text, "length")
    assert reply.tokens == CARD[:limit]


def test_a_whole_answer_within_max_tokens_keeps_its_finish() -> None:
    """The end token is not a token of the reply: four pieces fit in max_tokens=4."""
    assert fit("card_arrival", CARD, "stop", ReplyOptions(max_tokens=4)).finish_reason == "stop"
    assert fit("card_arrival", CARD, "length", ReplyOptions(max_tokens=9)).finish_reason == "length"


def test_stop_cuts_before_the_sequence() -> None:
    reply = fit("card_arrival", CARD, "stop", ReplyOptions(stop=("_",)))
    assert (reply.text, reply.finish_reason) == ("card", "stop")
    assert reply.tokens is not None and "".join(t.text for t in reply.tokens) == "card"


def test_a_stop_inside_a_token_trims_it_and_keeps_its_logprob() -> None:
    reply = fit("card_arrival", CARD, "length", ReplyOptions(stop=("rr",)))
    assert (reply.text, reply.finish_reason) == ("card_a", "stop")
    assert reply.tokens is not None
    assert [t.text for t in reply.tokens] == ["card", "_", "a"]
    assert reply.tokens[-1].logprob == CARD[2].logprob and reply.tokens[-1].token == "arr"


def test_the_earliest_stop_wins() -> None:
    reply = fit("card_arrival", CARD, "stop", ReplyOptions(stop=("val", "_")))
    assert reply.text == "card"


def test_a_stop_completed_after_max_tokens_does_not_apply() -> None:
    """Generation would have stopped at the token limit before it saw the stop string."""
    reply = fit("card_arrival", CARD, "stop", ReplyOptions(max_tokens=2, stop=("arr",)))
    assert (reply.text, reply.finish_reason) == ("card_", "length")
    within = fit("card_arrival", CARD, "stop", ReplyOptions(max_tokens=3, stop=("arr",)))
    assert (within.text, within.finish_reason) == ("card_", "stop")


def test_a_stop_at_the_start_leaves_nothing() -> None:
    reply = fit("card_arrival", CARD, "stop", ReplyOptions(stop=("card",)))
    assert (reply.text, reply.tokens, reply.finish_reason) == ("", (), "stop")


def test_text_without_tokens_honours_stop_only() -> None:
    """A teacher's text not known in student tokens (a remote fleet): the teacher was asked
    with max_tokens itself; the stop sequence is still applied here."""
    reply = fit("card_arrival", None, "length", ReplyOptions(max_tokens=1, stop=("_",)))
    assert (reply.text, reply.tokens, reply.finish_reason) == ("card", None, "stop")
    kept = fit("card_arrival", None, "length", ReplyOptions(max_tokens=1))
    assert (kept.text, kept.finish_reason) == ("card_arrival", "length")
