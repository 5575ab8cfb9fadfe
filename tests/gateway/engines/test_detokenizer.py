from __future__ import annotations

from gateway.engines.detokenizer import IncrementalDetokenizer

PIECES = {1: "card", 2: "_", 3: "arr", 4: "ival", 5: "\xe9"}


def decode(ids: list[int]) -> str:
    # byte-level tokens can split a character: id 6 and 7 are the two UTF-8 halves of "é"
    raw = b"".join(b"\xc3" if i == 6 else b"\xa9" if i == 7 else PIECES[i].encode() for i in ids)
    return raw.decode("utf-8", errors="replace")


def run(ids: list[int], stop: list[str]) -> tuple[list[str], str, bool]:
    d = IncrementalDetokenizer(decode, stop)
    out = []
    for i in ids:
        out.append(d.push(i))
        if d.stopped:
            break
    tail = d.flush()
    return out, "".join(out) + tail, d.stopped


def test_no_stop_streams_everything() -> None:
    pieces, text, stopped = run([1, 2, 3, 4], [])
    assert pieces == ["card", "_", "arr", "ival"] and text == "card_arrival" and not stopped


def test_stop_string_spanning_tokens_is_cut_and_never_emitted() -> None:
    pieces, text, stopped = run([1, 2, 3, 4], ["_arr"])
    assert text == "card" and stopped
    assert "_" not in "".join(pieces)


def test_possible_stop_prefix_is_held_then_released() -> None:
    d = IncrementalDetokenizer(decode, ["_x"])
    assert d.push(1) == "card"
    assert d.push(2) == ""  # "_" could begin "_x"
    assert d.push(3) == "_arr"  # it did not
    assert not d.stopped


def test_held_prefix_is_flushed_at_the_end() -> None:
    d = IncrementalDetokenizer(decode, ["_x"])
    d.push(1)
    d.push(2)
    assert d.flush() == "_"


def test_a_split_character_waits_for_its_second_half() -> None:
    d = IncrementalDetokenizer(decode, [])
    assert d.push(6) == ""
    assert d.push(7) == "\xe9"
