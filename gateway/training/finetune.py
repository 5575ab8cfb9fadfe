"""Fine-tune a pretrained causal LM on prompt → answer pairs: LoRA (peft) or every weight.

The prompt and the answer's ids come from the functions serving uses
(``engines/prompts.py``): the base's own chat template with its default system prompt,
the task's prompt policy, the last user turn cut as serving cuts it, and the answer as the
template closes an assistant turn (through ``<|im_end|>``, ``<|eot_id|>``...), so a student
is trained on exactly the ids it reads and writes when served. Loss on the answer ids only,
with the LM head applied at those positions alone (a 49k-token vocabulary costs most of a
small model's step otherwise). A wall-clock budget and ``max_steps`` end a run; the best
held-out teacher-forced exact match (equal to greedy exact match) is what is saved.

accelerate places the model (bf16 autocast on a GPU, fp32 on a CPU) and, under
``accelerate launch`` or ``torchrun``, runs data-parallel: each process takes its share of
the batches and process 0 evaluates and saves.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from gateway.cores import CoreWatch
from gateway.engines.base import SamplingParams
from gateway.engines.prompts import answer_ids, prompt_ids
from gateway.engines.student_folder import open_student
from gateway.examples import Example
from gateway.pipeline.prompt import example_request
from gateway.tasks import PromptFormat
from gateway.training.trainer import lr_factor

__all__ = ["FinetuneConfig", "FinetuneResult", "encode_pairs", "finetune"]


@dataclass(frozen=True)
class FinetuneConfig:
    method: Literal["lora", "full"] = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # or comma-separated names: "q_proj,v_proj"
    lr: float | None = None  # default: 2e-4 for LoRA, 2e-5 for every weight
    batch_size: int = 16
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.1
    time_budget_s: float = 1800.0
    max_steps: int | None = None
    eval_every_s: float = 300.0
    eval_limit: int = 256  # held-out examples that pick the checkpoint (evaluation is costly)
    max_prompt_tokens: int = 64  # the last user turn is cut to this, in training and serving
    merge: bool = False  # LoRA: save merged weights instead of an adapter
    seed: int = 0
    threads: int | None = None

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 2e-4 if self.method == "lora" else 2e-5


@dataclass(frozen=True)
class FinetuneResult:
    steps: int
    seconds: float
    best_eval_accuracy: float
    first_eval_loss: float
    best_eval_loss: float
    trainable: int
    parameters: int


Row = tuple[list[int], list[int]]  # prompt ids, answer ids (its end-of-turn id included)


def encode_pairs(
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    stops: frozenset[int],
    policy: PromptFormat,
    max_prompt_tokens: int,
) -> list[Row]:
    """Each example's prompt and answer ids exactly as serving would build them."""
    sampling = SamplingParams(max_tokens=1)
    rows = []
    for ex in examples:
        request = example_request(policy, ex, "train", sampling)
        prompt = prompt_ids(tokenizer, request, max_prompt_tokens)
        rows.append((prompt, answer_ids(tokenizer, request, ex.answer, stops, max_prompt_tokens)))
    return rows


class AnswerLoss(nn.Module):
    """Cross-entropy on the answer positions; the module the optimiser (and DDP) wraps."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss, and per row whether every answer id was the argmax."""
        hidden = self.lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        target = labels[:, 1:]
        keep = target != -100
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        loss = nn.functional.cross_entropy(logits, target[keep])
        wrong = torch.zeros_like(target, dtype=torch.bool)
        wrong[keep] = logits.argmax(-1) != target[keep]
        return loss, ~wrong.any(dim=1)


def _collate(rows: Sequence[Row], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor([*p, *a])
        mask[i, : len(p) + len(a)] = 1
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    return ids.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def _evaluate(
    loss_fn: AnswerLoss, rows: Sequence[Row], pad_id: int, device: torch.device
) -> tuple[float, float]:
    """Teacher-forced exact match and mean answer loss on ``rows``."""
    loss_fn.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    correct, loss_sum = 0, 0.0
    for start in range(0, len(order), 32):
        batch = [rows[i] for i in order[start : start + 32]]
        loss, right = loss_fn(*_collate(batch, pad_id, device))
        correct += int(right.sum())
        loss_sum += float(loss) * len(batch)
    return correct / max(len(rows), 1), loss_sum / max(len(rows), 1)


def _batches(rows: Sequence[Row], size: int, rng: random.Random) -> list[list[int]]:
    """Length-grouped batches in a random order (less padding, the same expected gradient)."""
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    batches: list[list[int]] = []
    for start in range(0, len(idx), size * 20):
        part = sorted(idx[start : start + size * 20], key=lambda i: len(rows[i][0]))
        batches += [part[j : j + size] for j in range(0, len(part), size)]
    rng.shuffle(batches)
    return batches


def _trainable(lm: Any, cfg: FinetuneConfig, init_from: Path | None) -> Any:
    """What the optimiser updates: every weight, a new adapter, or ``init_from``'s adapter."""
    if cfg.method == "full":
        return lm
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_from is not None:
        return PeftModel.from_pretrained(lm, init_from, is_trainable=True)

    names = cfg.target_modules
    targets = names if names == "all-linear" else [t.strip() for t in names.split(",") if t]
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(lm, config)


def finetune(
    base: Path,
    train: Sequence[Example],
    held_out: Sequence[Example],
    out: Path,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    policy: PromptFormat | None = None,
    init_from: Path | None = None,
    progress: Callable[[float, dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Train ``base`` (a whole model folder) and save the best checkpoint at ``out``: an
    adapter naming ``base``, or whole weights (``method="full"`` or ``merge``).

    ``init_from``: continue from that student (an adapter on ``base`` for LoRA, a whole
    model for ``full``); it is the first checkpoint, so the result is never worse than it
    on the held-out examples.

    Long because the loop's steps (schedule, synchronisation, evaluation, checkpoint) share
    its state; each is a few lines."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast
    from transformers import AutoTokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # On the CPU without a fixed count, torch's threads follow the cores others leave.
    cores = None if cfg.threads or torch.cuda.is_available() else CoreWatch()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    folder = open_student(base)
    if folder.is_adapter:
        raise ValueError(f"{base} is an adapter; give the whole model it applies to as --base")
    tokenizer = AutoTokenizer.from_pretrained(folder.tokenizer)
    stops = folder.stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    start = open_student(init_from) if init_from is not None and cfg.method == "full" else folder
    lm = start.load_model(dtype=torch.float32)
    model = _trainable(lm, cfg, init_from if cfg.method == "lora" else None)
    loss_fn = AnswerLoss(model.get_base_model() if cfg.method == "lora" else model)
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.peak_lr, weight_decay=cfg.weight_decay)
    wrapped, opt = accelerator.prepare(loss_fn, opt)
    device = accelerator.device

    policy = policy or PromptFormat()
    limit = cfg.max_prompt_tokens
    rows = encode_pairs(tokenizer, train, stops=stops, policy=policy, max_prompt_tokens=limit)
    dev = encode_pairs(
        tokenizer, held_out[: cfg.eval_limit], stops=stops, policy=policy, max_prompt_tokens=limit
    )
    main = accelerator.is_main_process
    first_acc, first_loss = _evaluate(loss_fn, dev, pad, device) if main else (0.0, 0.0)
    best = (first_acc, first_loss, _snapshot(model, cfg))
    step, started, last_eval = 0, time.monotonic(), time.monotonic()
    done = False
    while not done:
        batches = _batches(rows, cfg.batch_size, rng)
        for batch in batches[accelerator.process_index :: accelerator.num_processes]:
            prog = (time.monotonic() - started) / cfg.time_budget_s
            if cfg.max_steps:
                prog = max(prog, step / cfg.max_steps)
            evaluate = time.monotonic() - last_eval >= cfg.eval_every_s
            flags = torch.tensor([float(prog >= 1.0), float(evaluate)], device=device)
            if accelerator.num_processes > 1:  # process 0's clock decides for every process
                flags = broadcast(flags, from_process=0)
            if flags[0] > 0:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = cfg.peak_lr * lr_factor(
                    prog, cfg.warmup_fraction, cfg.final_lr_fraction
                )
            wrapped.train()
            loss, _ = wrapped(*_collate([rows[i] for i in batch], pad, device))
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
            step += 1
            if cores is not None and (threads := cores.poll()) is not None:
                torch.set_num_threads(threads)
            if flags[1] > 0:
                last_eval = time.monotonic()
                if main:
                    acc, dev_loss = _evaluate(loss_fn, dev, pad, device)
                    if (acc, -dev_loss) > (best[0], -best[1]):
                        best = (acc, dev_loss, _snapshot(model, cfg))
                accelerator.wait_for_everyone()
            if progress and main:
                progress(min(prog, 1.0), {"step": step, "loss": loss.item(), "best": best[0]})
    accelerator.wait_for_everyone()
    if main:
        acc, dev_loss = _evaluate(loss_fn, dev, pad, device)
        if (acc, -dev_loss) > (best[0], -best[1]):
            best = (acc, dev_loss, _snapshot(model, cfg))
        _restore(model, cfg, best[2])
        stats = {"steps": step, "seconds": time.monotonic() - started, "accuracy": best[0]}
        _save(model, tokenizer, folder.path, out, cfg, stats)
    return FinetuneResult(
        steps=step,
        seconds=time.monotonic() - started,
        best_eval_accuracy=best[0],
        first_eval_loss=first_loss,
        best_eval_loss=best[1],
        trainable=trainable,
        parameters=total,
    )


def _snapshot(model: Any, cfg: FinetuneConfig) -> dict[str, torch.Tensor]:
    """The trained weights, copied: the adapter's few MB for LoRA, everything otherwise."""
    if cfg.method == "lora":
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    return copy.deepcopy(model.state_dict())


def _restore(model: Any, cfg: FinetuneConfig, state: dict[str, torch.Tensor]) -> None:
    if cfg.method == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state)


def _save(
    model: Any, tokenizer: Any, base: Path, out: Path, cfg: FinetuneConfig, stats: dict[str, Any]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    adapter = cfg.method == "lora" and not cfg.merge
    if cfg.method == "lora" and cfg.merge:
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if (base / "generation_config.json").is_file():
        shutil.copyfile(base / "generation_config.json", out / "generation_config.json")
    if adapter:  # name the base relative to the adapter, so the two folders move together
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = os.path.relpath(base.resolve(), out.resolve())
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    card = {
        "trainer": "distillgate-finetune",
        "base": os.path.relpath(base.resolve(), out.resolve()),
        "config": asdict(cfg),
        **stats,
    }
    (out / "distillgate_student.json").write_text(json.dumps(card, indent=2) + "\n")
