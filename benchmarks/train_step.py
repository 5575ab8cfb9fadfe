"""Student training step time: LM head on every position vs on answer positions only.

Both variants train the same fresh model on the same 60 Banking77 batches, side by side
in one run, at 1 and 2 torch threads.

    python benchmarks/train_step.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import read_examples  # noqa: E402
from gateway.training.model import StudentShape, add_training_dropout, new_student  # noqa: E402
from gateway.training.tokenizer import build_tokenizer  # noqa: E402
from gateway.training.trainer import _answer_loss, _batches, _collate, _prompt_ids, encode  # noqa: E402


def main() -> None:
    train = read_examples(ROOT / "data/banking77/train.jsonl")
    tok = build_tokenizer([e.prompt or "" for e in train], [e.answer for e in train])
    enc = encode(train, tok)
    batches = _batches(enc, 32, random.Random(0))[:60]
    data = []
    for b in batches:
        ids = tok([enc[i].text for i in b], add_special_tokens=False)["input_ids"]
        rows = [
            (_prompt_ids(tok, enc[i].prefix, t, 64), enc[i].answer)
            for i, t in zip(b, ids, strict=True)
        ]
        data.append(_collate(rows, tok.pad_token_id))
    print("| threads | every position (s/step) | answer positions (s/step) | ratio |")
    print("| --- | --- | --- | --- |")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seconds = {}
        for mode in ("every", "answers"):
            torch.manual_seed(0)
            model = new_student(StudentShape(), tok)
            add_training_dropout(model, 0.1)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            started = time.perf_counter()
            for ids, mask, labels in data:
                if mode == "every":
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                else:
                    loss = _answer_loss(model, ids, mask, labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
            seconds[mode] = (time.perf_counter() - started) / len(data)
        ratio = seconds["every"] / seconds["answers"]
        print(f"| {threads} | {seconds['every']:.3f} | {seconds['answers']:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
