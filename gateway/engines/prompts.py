"""Prompt token ids as the student was trained to read them, for the in-process engines.

Both the embedded engine and vLLM take token ids from here, so a student reads the same
ids on a laptop CPU and on a GPU: the chat template applied by the tokenizer to token ids
(one BOS, from the template, never a second from the tokenizer), and the last user turn
cut to the length the distillgate trainer cut it to, when it recorded one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gateway.engines.base import GenerationRequest
from gateway.errors import InvalidRequest

__all__ = [
    "answer_ids",
    "check_prompt_tokens",
    "prompt_ids",
    "room_after",
    "split_text",
    "trained_prompt_limit",
]


def trained_prompt_limit(model_dir: Path) -> int | None:
    """The user-text length the distillgate trainer cut to, if it trained this student."""
    card = model_dir / "distillgate_student.json"
    if not card.is_file():
        return None
    limit = json.loads(card.read_text()).get("config", {}).get("max_prompt_tokens")
    return int(limit) if limit else None


def prompt_ids(tokenizer: Any, request: GenerationRequest, user_limit: int | None) -> list[int]:
    if request.prompt is not None:
        return list(tokenizer.encode(request.prompt, add_special_tokens=False))
    ids = tokenizer.apply_chat_template(
        _chat(tokenizer, request, user_limit),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    return list(ids)


def answer_ids(
    tokenizer: Any,
    request: GenerationRequest,
    answer: str,
    stops: Collection[int],
    user_limit: int | None,
) -> list[int]:
    """The ids a student must generate to give ``answer`` to ``request``, through the id
    that ends it: the assistant turn as the chat template renders it after the prompt, up
    to its first end-of-turn id (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``). What training
    teaches and calibration scores, so both see the tokens serving generates."""
    plain = list(tokenizer.encode(answer, add_special_tokens=False))
    end = tokenizer.eos_token_id
    if request.prompt is None:
        chat = _chat(tokenizer, request, user_limit)
        prompt = prompt_ids(tokenizer, request, user_limit)
        whole = tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": answer}], tokenize=True, return_dict=False
        )
        turn = list(whole)[len(prompt) :] if list(whole)[: len(prompt)] == prompt else []
        ends = [i for i, t in enumerate(turn) if t in stops]
        if ends:
            return turn[: ends[0] + 1]
    return [*plain, end]


def _chat(
    tokenizer: Any, request: GenerationRequest, user_limit: int | None
) -> list[dict[str, str]]:
    """The request's turns for the chat template, the last user turn cut as in training."""
    chat = [{"role": m.role, "content": m.content} for m in request.messages]
    if user_limit and chat[-1]["role"] == "user":
        text_ids = tokenizer.encode(chat[-1]["content"], add_special_tokens=False)
        if len(text_ids) > user_limit:
            chat[-1]["content"] = str(tokenizer.decode(text_ids[:user_limit]))
    return chat


def room_after(ids: list[int], context: int, request: GenerationRequest) -> int:
    """Tokens left to generate in a ``context``-token window after the prompt; a prompt
    that leaves none, or is over the task's ``max_prompt_tokens``, is the client's error
    (400), as OpenAI words it."""
    check_prompt_tokens(len(ids), request)
    room = context - len(ids)
    if room < 1:
        raise InvalidRequest(
            f"This student's context is {context} tokens; the prompt has {len(ids)}.",
            param="messages" if request.messages else "prompt",
            code="context_length_exceeded",
        )
    return room


def check_prompt_tokens(count: int, request: GenerationRequest) -> None:
    limit = request.max_prompt_tokens
    if limit is not None and count > limit:
        raise InvalidRequest(
            f"This task takes prompts of at most {limit} tokens; the prompt has {count}.",
            param="messages" if request.messages else "prompt",
            code="context_length_exceeded",
        )


def split_text(tokenizer: Any, text: str) -> tuple[list[int], list[str]]:
    """``text`` as the student's tokenizer splits it: the ids, and each one's share of the
    original text (from the tokenizer's offsets, so a normalising tokenizer, one that
    lower-cases say, still yields pieces that join to ``text`` exactly)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in encoded["input_ids"]]
    if not ids:
        return [], []
    starts = list(
        itertools.accumulate((int(a) for a, _ in encoded["offset_mapping"][1:]), max, initial=0)
    )
    ends = [*starts[1:], len(text)]
    return ids, [text[a:b] for a, b in zip(starts, ends, strict=True)]
