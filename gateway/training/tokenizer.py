"""The student's tokenizer: byte-level BPE trained on the task's own texts and answers.

Byte-level BPE never meets an unknown character. Lower-casing (after NFKC) halves
what a tiny model must learn about user text, but it would also lower-case the
answers; an answer that does not survive the round trip (``Refund_not_showing_up``)
is added whole as a non-normalised token so the student can still spell it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

__all__ = [
    "ASSISTANT",
    "CHAT_TEMPLATE",
    "END",
    "PAD",
    "SYSTEM",
    "USER",
    "build_tokenizer",
    "check_round_trip",
    "is_closed_answer_set",
]

PAD, USER, ASSISTANT, SYSTEM, END = "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
SPECIAL_TOKENS = [PAD, USER, ASSISTANT, SYSTEM, END]

# One format for training, transformers and vLLM: <|user|>{text}<|assistant|>{answer}<|end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}<|end|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# A closed answer set (labels): few distinct answers, each seen several times. Only such
# answers may be added whole as tokens; free text must be spelled out piece by piece.
_MAX_CLOSED_ANSWERS = 1000
_MIN_EXAMPLES_PER_ANSWER = 3


def is_closed_answer_set(answers: Sequence[str]) -> bool:
    distinct = len(set(answers))
    return distinct <= _MAX_CLOSED_ANSWERS and distinct * _MIN_EXAMPLES_PER_ANSWER <= len(answers)


def build_tokenizer(
    texts: Sequence[str],
    answers: Sequence[str],
    *,
    vocab_size: int = 3000,
    lowercase: bool | None = None,
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``texts`` and ``answers``; every answer must round-trip.

    ``lowercase=None`` (auto): NFKC and lower-case for a closed answer set (labels whose case
    is kept by adding them whole) or when no answer has capitals; no normalisation at all for
    free-text answers that have them.
    """
    closed = is_closed_answer_set(answers)
    if lowercase is None:
        lowercase = closed or all(a == a.lower() for a in answers)
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # else none: free text is written back byte for byte (NFKC would turn "…" into "...",
    # an answer the student could then never produce)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*texts, *answers], trainer=trainer)

    distinct = sorted(set(answers))
    broken = [a for a in distinct if tok.decode(tok.encode(a).ids) != a]
    if broken and closed:
        tok.add_tokens([AddedToken(a, normalized=False, single_word=True) for a in broken])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=END,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
        model_max_length=256,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    check_round_trip(fast, distinct)
    return fast


def check_round_trip(tokenizer: PreTrainedTokenizerFast, answers: Sequence[str]) -> None:
    """Raise ``ValueError`` if the tokenizer cannot reproduce an answer exactly."""
    for answer in answers:
        ids = tokenizer.encode(answer, add_special_tokens=False)
        back = tokenizer.decode(ids)
        if back != answer:
            raise ValueError(
                f"the tokenizer turns answer {answer!r} into {back!r}; the student could never "
                "produce it. Train without lower-casing (--no-lowercase) for free-text answers."
            )
