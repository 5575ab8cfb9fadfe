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

# Above this many distinct answers the task is free text, not a closed answer set.
_MAX_CLOSED_ANSWERS = 5000


def build_tokenizer(
    texts: Sequence[str],
    answers: Sequence[str],
    *,
    vocab_size: int = 3000,
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``texts`` and ``answers``; every answer must round-trip."""
    norm: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if lowercase:
        norm.append(normalizers.Lowercase())
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(norm)
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
    if broken and len(distinct) <= _MAX_CLOSED_ANSWERS:
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
