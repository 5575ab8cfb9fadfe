"""Train the from-scratch student on prompt → answer pairs.

The recipe (see docs/student.md for what was measured): loss on the answer tokens and
``<|end|>`` only; AdamW with warm-up then cosine decay over ``max_steps`` (the work, so a
busy machine trains the same student, only later), the wall-clock budget a cap that
compresses the schedule and says it cut the run short; dropout and word dropout against
over-fitting; an EMA of the weights is what gets evaluated and saved; the best held-out
checkpoint is kept. Without a fixed thread count, torch's follows the cores other
processes leave (``gateway.cores.CoreWatch``).
Held-out accuracy is teacher-forced exact match, which equals greedy-decoding exact
match (greedy produces the answer iff every answer token is the argmax given the
previous ones) at the cost of one forward pass.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn
from transformers import GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from gateway.cores import CoreWatch
from gateway.examples import Example
from gateway.training.model import StudentShape, add_training_dropout, new_student
from gateway.training.tokenizer import ASSISTANT, USER, build_tokenizer, check_round_trip

__all__ = [
    "EncodedExample",
    "TrainConfig",
    "TrainResult",
    "encode",
    "exact_match",
    "lr_factor",
    "train_student",
]


@dataclass(frozen=True)
class TrainConfig:
    shape: StudentShape = field(default_factory=StudentShape)
    vocab_size: int = 3000
    lowercase: bool | None = None  # auto: see build_tokenizer
    max_prompt_tokens: int = 64
    batch_size: int = 32
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    warmup_fraction: float = 0.03
    final_lr_fraction: float = 0.05
    ema_decay: float = 0.998
    dropout: float = 0.1
    word_dropout: float = 0.1
    time_budget_s: float = 780.0  # a cap when max_steps is given, else the schedule
    max_steps: int | None = None
    eval_every_s: float = 45.0
    # Held-out evaluation by steps instead, so a busy machine keeps the same checkpoint.
    eval_every_steps: int | None = None
    seed: int = 0
    threads: int | None = None
    # How the best checkpoint is chosen on the held-out set: whole answers exactly right
    # (labels, records), or the share of answer tokens right (free text, where a whole
    # description is rarely word for word one of its references).
    select_by: Literal["exact_match", "token_accuracy"] = "exact_match"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    best_eval_accuracy: float
    parameters: int
    cut_short: bool = False  # the time cap ended the run before max_steps


@dataclass(frozen=True)
class EncodedExample:
    prefix: tuple[int, ...]  # earlier turns, rendered by the chat template
    text: str  # the last user message, which word dropout may thin
    answer: tuple[int, ...]  # answer ids followed by <|end|>
    # Words of ``text`` the answer repeats (an extracted slot value): word dropout keeps them,
    # or it would teach the student to write what its input does not say.
    copied: frozenset[str] = frozenset()


def encode(examples: Sequence[Example], tokenizer: PreTrainedTokenizerFast) -> list[EncodedExample]:
    """Split each example into the parts the batcher needs; the last turn must be the user's."""
    out = []
    for ex in examples:
        chat = ex.chat()
        if chat[-1]["role"] != "user":
            raise ValueError("an example's conversation must end with a user message")
        prefix: list[int] = []
        if len(chat) > 1:
            rendered = tokenizer.apply_chat_template(chat[:-1], tokenize=True, return_dict=False)
            prefix = cast(list[int], rendered)
        answer = tokenizer.encode(ex.answer, add_special_tokens=False)
        text = chat[-1]["content"]
        out.append(
            EncodedExample(
                tuple(prefix),
                text,
                (*answer, tokenizer.eos_token_id),
                copied_words(text, ex.answer),
            )
        )
    return out


def _prompt_ids(
    tokenizer: PreTrainedTokenizerFast, prefix: Sequence[int], text_ids: Sequence[int], limit: int
) -> list[int]:
    user = cast(int, tokenizer.convert_tokens_to_ids(USER))
    assistant = cast(int, tokenizer.convert_tokens_to_ids(ASSISTANT))
    return [*prefix, user, *text_ids[:limit], assistant]


def _collate(
    rows: Sequence[tuple[list[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels that are -100 outside the answers."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        seq = [*p, *a]
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(a)
    return ids, mask, labels


_WORD = re.compile(r"\w+")


def copied_words(text: str, answer: str) -> frozenset[str]:
    """The words of ``text`` whose every part the answer also contains (case aside)."""
    in_answer = {w.lower() for w in _WORD.findall(answer)}
    return frozenset(
        w
        for w in text.split()
        if (parts := _WORD.findall(w.lower())) and all(p in in_answer for p in parts)
    )


def drop_words(text: str, p: float, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    words = text.split()
    kept = [w for w in words if w in keep or rng.random() >= p]
    return " ".join(kept or words)


def exact_match(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    data: Sequence[EncodedExample],
    *,
    max_prompt_tokens: int,
    batch_size: int = 256,
) -> float:
    """Share of examples whose whole answer (and <|end|>) is the argmax at every step."""
    return _held_out(model, tokenizer, data, max_prompt_tokens, batch_size)[0]


def held_out_score(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    data: Sequence[EncodedExample],
    cfg: TrainConfig,
) -> float:
    """The held-out figure ``cfg.select_by`` names (higher is better)."""
    exact, tokens = _held_out(model, tokenizer, data, cfg.max_prompt_tokens, 256)
    return exact if cfg.select_by == "exact_match" else tokens


@torch.no_grad()
def _held_out(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    data: Sequence[EncodedExample],
    max_prompt_tokens: int,
    batch_size: int,
) -> tuple[float, float]:
    """Teacher-forced: the share of whole answers, and of answer tokens, that are argmax."""
    model.eval()
    texts = tokenizer([d.text for d in data], add_special_tokens=False)["input_ids"]
    rows = [
        (_prompt_ids(tokenizer, d.prefix, t, max_prompt_tokens), d.answer)
        for d, t in zip(data, texts, strict=True)
    ]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    correct, right_tokens, tokens = 0, 0, 0
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start : start + batch_size]]
        ids, mask, labels = _collate(batch, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        pred = logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        counted = target != -100
        wrong = (pred != target) & counted
        correct += int((~wrong.any(dim=1)).sum())
        right_tokens += int((counted & ~wrong).sum())
        tokens += int(counted.sum())
    return correct / len(rows), right_tokens / max(tokens, 1)


def _answer_loss(
    model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy on answer tokens, projecting to the vocabulary only where it counts.

    Most positions are prompt; skipping their LM-head matmul makes a step ~20 % cheaper.
    """
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return nn.functional.cross_entropy(logits, target[keep])


def lr_factor(progress: float, warmup_fraction: float, final_fraction: float) -> float:
    """Linear warm-up, then cosine down to ``final_fraction`` of the peak at progress 1."""
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    t = min((progress - warmup_fraction) / (1.0 - warmup_fraction), 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))


def _batches(
    data: Sequence[EncodedExample], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Length-grouped batches: shuffle, sort within chunks of 50 batches, shuffle batches."""
    idx = list(range(len(data)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start : start + chunk], key=lambda i: len(data[i].text))
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_student(
    train: Sequence[Example],
    held_out: Sequence[Example],
    out_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    progress: Callable[[float, dict[str, float]], None] | None = None,
    init_from: str | Path | None = None,
    answers: Sequence[str] = (),
) -> TrainResult:
    """Train, keep the best EMA checkpoint on ``held_out``, save a Hugging Face folder.

    ``init_from``: continue from that student (its tokenizer and weights; ``cfg.shape`` and
    ``cfg.vocab_size`` are then ignored), e.g. on last round's data plus captured pairs.
    ``answers``: the task's whole answer set, so that labels absent from ``train`` still
    round-trip through the tokenizer, and a later round can teach them.

    Long because the training loop's steps (schedule, EMA, evaluation, checkpoint) share its
    state; each is a few lines.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cores = None if cfg.threads else CoreWatch()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    if init_from is not None:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(init_from)
        check_round_trip(tokenizer, sorted({ex.answer for ex in train}))
        model = LlamaForCausalLM.from_pretrained(init_from)
    else:
        tokenizer = build_tokenizer(
            [t["content"] for ex in train for t in ex.chat()],
            [*(ex.answer for ex in train), *answers],
            vocab_size=cfg.vocab_size,
            lowercase=cfg.lowercase,
        )
        model = new_student(cfg.shape, tokenizer)
    add_training_dropout(model, cfg.dropout)
    ema = copy.deepcopy(model)
    ema.eval()
    for p in ema.parameters():
        p.requires_grad_(False)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    train_enc = encode(train, tokenizer)
    held_enc = encode(held_out, tokenizer)
    params: list[torch.Tensor] = list(model.parameters())
    ema_params: list[torch.Tensor] = list(ema.parameters())

    best_acc, best_state = -1.0, copy.deepcopy(ema.state_dict())
    parent: tuple[float, dict[str, torch.Tensor]] | None = None
    if init_from is not None and held_enc:
        # A continuation is never kept worse on the held-out set than the student it started
        # from (a tie goes to the continuation, which has seen more data).
        acc = held_out_score(ema, tokenizer, held_enc, cfg)
        parent = (acc, copy.deepcopy(ema.state_dict()))
    step, started, last_eval = 0, time.monotonic(), time.monotonic()
    done = False
    while not done:
        for batch_idx in _batches(train_enc, cfg.batch_size, rng):
            elapsed = time.monotonic() - started
            prog = elapsed / cfg.time_budget_s
            if cfg.max_steps:
                prog = max(prog, step / cfg.max_steps)
            if prog >= 1.0:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(prog, cfg.warmup_fraction, cfg.final_lr_fraction)

            texts = [
                drop_words(train_enc[i].text, cfg.word_dropout, rng, train_enc[i].copied)
                for i in batch_idx
            ]
            text_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            rows = [
                (
                    _prompt_ids(tokenizer, train_enc[i].prefix, t, cfg.max_prompt_tokens),
                    train_enc[i].answer,
                )
                for i, t in zip(batch_idx, text_ids, strict=True)
            ]
            ids, mask, labels = _collate(rows, tokenizer.pad_token_id)
            model.train()
            loss = _answer_loss(model, ids, mask, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
            step += 1
            with torch.no_grad():
                d = min(cfg.ema_decay, (1 + step) / (10 + step))
                torch._foreach_mul_(ema_params, d)
                torch._foreach_add_(ema_params, params, alpha=1.0 - d)

            now = time.monotonic()
            if cores is not None and (threads := cores.poll()) is not None:
                torch.set_num_threads(threads)
            if cfg.eval_every_steps:
                due = step % cfg.eval_every_steps == 0
            else:
                due = now - last_eval >= cfg.eval_every_s
            if due:
                last_eval = now
                acc = held_out_score(ema, tokenizer, held_enc, cfg)
                if acc > best_acc:
                    best_acc, best_state = acc, copy.deepcopy(ema.state_dict())
            if progress:
                progress(min(prog, 1.0), {"step": step, "loss": loss.item(), "best": best_acc})

    acc = held_out_score(ema, tokenizer, held_enc, cfg)
    if acc > best_acc:
        best_acc, best_state = acc, ema.state_dict()
    if parent is not None and best_acc < parent[0]:
        best_acc, best_state = parent
    ema.load_state_dict(best_state)
    seconds = time.monotonic() - started
    cut_short = cfg.max_steps is not None and step < cfg.max_steps
    _save(
        ema,
        tokenizer,
        Path(out_dir),
        cfg,
        steps=step,
        seconds=seconds,
        accuracy=best_acc,
        cut_short=cut_short,
    )
    n_params = sum(p.numel() for p in ema.parameters())
    return TrainResult(
        steps=step,
        seconds=seconds,
        best_eval_accuracy=best_acc,
        parameters=n_params,
        cut_short=cut_short,
    )


def _save(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    out: Path,
    cfg: TrainConfig,
    **stats: float,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.config.attention_dropout = 0.0
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    card = {"trainer": "distillgate", "config": asdict(cfg), **stats}
    (out / "distillgate_student.json").write_text(json.dumps(card, indent=2) + "\n")
