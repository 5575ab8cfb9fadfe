"""The embedded student engine: transformers on CPU (or CUDA), with continuous batching.

One worker thread owns the model. Each iteration it admits waiting requests (a batched
prefill), merges them into the running batch, and advances every running row by one
token in a single forward pass over the shared KV cache; finished and aborted rows
leave between steps. The event loop only tokenizes, detokenizes and awaits queues, so
it never blocks on torch. A bounded waiting queue turns overload into a 429 with
``Retry-After`` instead of unbounded latency.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, DynamicCache

from gateway.engines.base import (
    FinishReason,
    GenerationRequest,
    SamplingParams,
    ScoredText,
    TokenDelta,
    TokenLogprob,
)
from gateway.engines.batch import RunningBatch, left_pad
from gateway.engines.detokenizer import IncrementalDetokenizer, TokenTexts
from gateway.engines.grammar import Constraint, JsonGrammars
from gateway.engines.prompts import (
    answer_ids,
    prompt_ids,
    room_after,
    split_text,
    trained_prompt_limit,
)
from gateway.engines.student_folder import open_student
from gateway.errors import EngineUnavailable, GatewayError, InvalidRequest, Overloaded

__all__ = ["TransformersEngine"]

logger = logging.getLogger(__name__)

_MAX_TOP_LOGPROBS = 20
# Below this a sampling temperature is greedy decoding: softmax(z / T) is the argmax to
# within float precision, and dividing by a subnormal T overflows to inf, then NaN.
_GREEDY_BELOW = 1e-4
_FAILED_STEPS_BEFORE_DOWN = 3  # forward passes failing in a row: the engine is broken


@dataclass
class _Token:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    finish: FinishReason | None
    scaled_logprob: float | None


Item = _Token | BaseException


@dataclass
class _Sequence:
    request_id: str
    prompt: list[int]
    sampling: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Item]
    temperature: float | None = None  # for the calibrated confidence, full softmax
    generator: torch.Generator | None = None
    generated: int = 0
    last_token: int = -1
    aborted: bool = False
    done: bool = False
    constraint: Constraint | None = None  # the tokens its JSON Schema allows next


class TransformersEngine:
    """``StudentEngine`` over a Hugging Face causal LM folder.

    Parameters
    ----------
    model_dir : a student folder (``student_folder``): a whole model, or an adapter and its base.
    max_batch_size : rows advanced together per forward pass; 1 disables batching.
    max_waiting : requests allowed to queue for a batch slot before new ones get 429.
    admit_every : while a batch runs, decode steps between admissions of a few newcomers.
    device : "cpu", "cuda" or "auto".
    threads : torch's CPU threads (process-wide); torch's default when None.
    on_step : called from the worker with the number of rows in each decode step.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_batch_size: int = 32,
        max_waiting: int = 256,
        admit_every: int = 2,
        device: str = "auto",
        threads: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_dir = Path(model_dir)
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.admit_every = admit_every
        self.device = torch.device(device)
        self._on_step = on_step
        student = open_student(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(student.tokenizer)
        self.model = student.load_model().to(self.device)
        self._token_text = TokenTexts(self.tokenizer)
        self._eos = student.stop_ids(self.tokenizer)
        # Never offered as alternatives: a client's logprobs spell text, not control tokens.
        self._special = frozenset(self.tokenizer.all_special_ids) | self._eos
        self._max_user_tokens = trained_prompt_limit(self.model_dir)
        self._pad = self.tokenizer.pad_token_id or 0
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._by_id: dict[str, _Sequence] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._grammars: JsonGrammars | None = None  # built on the first structured request
        self._grammars_made = threading.Lock()

    @property
    def max_context(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def pending(self) -> int:
        """Requests accepted and not yet finished, running or waiting."""
        with self._wake:
            return len(self._by_id)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="student-engine", daemon=True)
            self._thread.start()

    async def aclose(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineUnavailable("the student engine has failed") from self._failure
        if self._thread is None or not self._thread.is_alive():
            raise EngineUnavailable("the student engine is not running")

    async def abort(self, request_id: str) -> None:
        with self._wake:
            seq = self._by_id.get(request_id)
            if seq is not None:
                seq.aborted = True
                self._wake.notify()

    # -- requests ----------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        return prompt_ids(self.tokenizer, request, self._max_user_tokens)

    def encode_answer(self, request: GenerationRequest, answer: str) -> list[int]:
        """The ids this student generates to give ``answer``, its end-of-turn id included."""
        return answer_ids(self.tokenizer, request, answer, self._eos, self._max_user_tokens)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        """Long because admission, the queue wait and detokenisation run inline on the hot path."""
        await self.check_health()
        prompt = self.encode(request)
        sampling = request.sampling
        room = room_after(prompt, self.max_context, request)
        if sampling.max_tokens > room:  # generate what fits; the answer ends with "length"
            sampling = dataclasses.replace(sampling, max_tokens=room)
        queue: asyncio.Queue[Item] = asyncio.Queue()
        seq = _Sequence(
            request.request_id,
            prompt,
            sampling,
            asyncio.get_running_loop(),
            queue,
            temperature=request.confidence_temperature,
        )
        if sampling.json_schema is not None:
            seq.constraint = await asyncio.to_thread(self._constraint, sampling.json_schema)
        if sampling.temperature >= _GREEDY_BELOW:
            seq.generator = torch.Generator(device="cpu")
            if sampling.seed is not None:
                seq.generator.manual_seed(sampling.seed)
            else:
                seq.generator.seed()
        with self._wake:
            if self._stopping:
                raise Overloaded("The gateway is shutting down.", status_code=503)
            if self._failure is not None:  # it failed since check_health above
                raise EngineUnavailable("the student engine has failed") from self._failure
            if len(self._waiting) >= self.max_waiting:
                raise Overloaded(
                    f"The student's queue is full ({self.max_waiting} waiting); retry shortly."
                )
            if request.request_id in self._by_id:
                raise InvalidRequest(f"request id {request.request_id!r} is already running")
            self._by_id[request.request_id] = seq
            self._waiting.append(seq)
            self._wake.notify()

        detok = IncrementalDetokenizer(self._decode, sampling.stop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, GatewayError):
                    raise item
                if isinstance(item, BaseException):
                    raise EngineUnavailable("the student failed on this request") from item
                end = item.token_id in self._eos
                text = detok.push(item.token_id) if not end else ""
                finish = "stop" if detok.stopped else item.finish
                if finish is not None:
                    text += detok.flush()
                yield TokenDelta(
                    token_id=item.token_id,
                    text=text,
                    token=self._token_text(item.token_id),
                    logprob=item.logprob,
                    top_logprobs=tuple(
                        TokenLogprob(t, self._token_text(t), lp) for t, lp in item.top
                    ),
                    finish_reason=finish,
                    prompt_tokens=len(prompt),
                    scaled_logprob=item.scaled_logprob,
                    end=end,
                )
                if finish is not None:
                    return
        finally:
            if not seq.done:  # the client left, or a stop string ended it early
                await self.abort(request.request_id)

    async def score(self, request: GenerationRequest, text: str, *, logprobs: bool) -> ScoredText:
        prompt = self.encode(request)
        ids, pieces = split_text(self.tokenizer, text)
        scored: list[tuple[float, list[tuple[int, float]]]] = [(0.0, [])] * len(ids)
        if logprobs and ids:
            k = request.sampling.top_logprobs
            scored = await asyncio.to_thread(self._teacher_forced, prompt, ids, k)
        return ScoredText.of(len(prompt), ids, pieces, scored, self._token_text)

    def _teacher_forced(
        self, prompt: list[int], ids: list[int], k: int
    ) -> list[tuple[float, list[tuple[int, float]]]]:
        """Each of ``ids``' logprob after ``prompt`` and the ones before it, with its top
        ``k`` alternatives: one forward pass, off the event loop (read-only on the model,
        so it may run beside the worker's)."""
        with torch.inference_mode():
            window = [*prompt, *ids][-self.max_context :]
            logits = self.model(input_ids=torch.tensor([window], device=self.device)).logits
            logprobs = torch.log_softmax(logits[0, -len(ids) - 1 : -1].float(), dim=-1)
            chosen = logprobs.gather(1, torch.tensor(ids, device=self.device)[:, None])[:, 0]
            tops = self._top(logprobs, k)
        return list(zip(chosen.tolist(), tops, strict=True))

    def _top(self, logprobs: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """Per row, the ``k`` likeliest tokens that are not special tokens."""
        if not k:
            return [[] for _ in range(logprobs.shape[0])]
        k = min(k, _MAX_TOP_LOGPROBS)
        values, ids = logprobs.topk(min(k + len(self._special), logprobs.shape[-1]), dim=-1)
        return [
            [(t, lp) for t, lp in zip(row_ids, row_lp, strict=True) if t not in self._special][:k]
            for row_ids, row_lp in zip(ids.tolist(), values.tolist(), strict=True)
        ]

    def _constraint(self, schema_json: str) -> Constraint:
        with self._grammars_made:  # two first requests at once build it once
            if self._grammars is None:
                vocab = int(self.model.get_output_embeddings().weight.shape[0])
                self._grammars = JsonGrammars(self.tokenizer, vocab, self._eos)
            grammars = self._grammars
        try:
            return grammars.constraint(schema_json)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    # -- worker ------------------------------------------------------------------------
    def _admit(self, running: int, steps_since_admit: int) -> list[_Sequence]:
        """Take waiting requests into the batch; call with the lock held.

        A prefill is a whole forward pass, so while a batch is running, newcomers are
        taken in groups: when they would fill the free slots, or every few decode steps
        (a few milliseconds of extra wait) rather than one forward pass each.
        """
        free = self.max_batch_size - running
        if running and len(self._waiting) < free and steps_since_admit < self.admit_every:
            return []
        admitted: list[_Sequence] = []
        while self._waiting and len(admitted) < free:
            seq = self._waiting.popleft()
            if seq.aborted:
                self._by_id.pop(seq.request_id, None)
            else:
                admitted.append(seq)
        return admitted

    def _run(self) -> None:
        """The worker. A failed step fails the requests it carried, and the engine goes
        on; ``_FAILED_STEPS_BEFORE_DOWN`` failures in a row mean the engine itself is broken
        (``check_health`` and so ``/readyz`` report it, and every request gets a 503)."""
        running: list[_Sequence] = []
        batch: RunningBatch | None = None
        steps_since_admit = 0
        failed_steps = 0
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._stopping and not self._waiting and not running:
                            self._wake.wait()
                        if self._stopping:
                            break
                        admitted = self._admit(len(running), steps_since_admit)
                    if admitted:
                        steps_since_admit = 0
                        try:
                            fresh = self._prefill(admitted)
                        except Exception as exc:
                            failed_steps = self._step_failed(admitted, exc, failed_steps)
                            continue
                        batch = fresh if batch is None else batch.merge(fresh)
                        running += admitted
                        running, batch = self._retire(running, batch)
                    if running and batch is not None:
                        steps_since_admit += 1
                        try:
                            batch = self._decode_step(running, batch)
                        except Exception as exc:
                            failed_steps = self._step_failed(running, exc, failed_steps)
                            running, batch = [], None
                            continue
                        running, batch = self._retire(running, batch)
                    failed_steps = 0
        except BaseException as exc:  # surfaces to every waiting client as a 503
            with self._wake:  # under the lock: no request is queued after this
                self._failure = exc
                _deliver([(seq, exc) for seq in [*running, *self._waiting]])
                self._waiting.clear()
                self._by_id.clear()
            logger.exception("student engine worker failed")
            return
        with self._wake:  # shutting down: nothing accepted is dropped silently
            closing = Overloaded("The gateway is shutting down.", status_code=503)
            _deliver([(seq, closing) for seq in [*running, *self._waiting]])

    def _step_failed(self, seqs: list[_Sequence], exc: Exception, failed_before: int) -> int:
        """Fail ``seqs`` alone; re-raise (the engine is down) after too many in a row."""
        logger.error("student engine step failed (%d requests): %r", len(seqs), exc)
        self._fail(seqs, exc)
        if failed_before + 1 >= _FAILED_STEPS_BEFORE_DOWN:
            raise exc
        return failed_before + 1

    def _fail(self, seqs: list[_Sequence], exc: BaseException) -> None:
        with self._wake:
            for seq in seqs:
                seq.done = True
                self._by_id.pop(seq.request_id, None)
        _deliver([(seq, exc) for seq in seqs])

    def _prefill(self, seqs: list[_Sequence]) -> RunningBatch:
        ids, mask = left_pad([s.prompt for s in seqs], self._pad)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch = RunningBatch(
            out.past_key_values, mask.to(self.device), mask.sum(dim=1).to(self.device)
        )
        self._sample(seqs, out.logits[:, -1, :])
        return batch

    def _decode_step(self, seqs: list[_Sequence], batch: RunningBatch) -> RunningBatch:
        if self._on_step is not None:
            self._on_step(len(seqs))
        ids = torch.tensor([[s.last_token] for s in seqs], dtype=torch.long, device=self.device)
        mask = torch.cat([batch.mask, batch.mask.new_ones((batch.rows, 1))], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=batch.positions[:, None],
            past_key_values=batch.cache,
            use_cache=True,
        )
        self._sample(seqs, out.logits[:, -1, :])
        return RunningBatch(out.past_key_values, mask, batch.positions + 1)

    def _sample(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        logits = logits.float()
        # Logprobs are the model's own (as vLLM's raw logprobs): a constraint picks among
        # the tokens its grammar allows, and the confidence still says what the model thought.
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logprobs.argmax(dim=-1)
        broken: list[tuple[_Sequence, Item]] = []
        for i, seq in enumerate(seqs):
            row = logits[i]
            try:
                if seq.constraint is not None:
                    row = row.masked_fill(~seq.constraint.allowed().to(row.device), -math.inf)
                    chosen[i] = row.argmax()
                if seq.sampling.temperature >= _GREEDY_BELOW:
                    chosen[i] = _sample_row(row, seq.sampling, seq.generator)
            except Exception as exc:  # this row's sampling alone: fail this request only
                logger.error("sampling failed for %s: %r", seq.request_id, exc)
                broken.append((seq, exc))
        k = max(s.sampling.top_logprobs for s in seqs)
        tops = self._top(logprobs, k)
        chosen_lp = logprobs.gather(1, chosen[:, None])[:, 0]
        chosen_l, chosen_lp_l = chosen.tolist(), chosen_lp.tolist()
        scaled_l: list[float | None] = [None] * len(seqs)
        if any(s.temperature is not None for s in seqs):
            temps = torch.tensor([s.temperature or 1.0 for s in seqs], device=logits.device)
            scaled = torch.log_softmax(logits / temps[:, None], dim=-1).gather(1, chosen[:, None])[
                :, 0
            ]
            scaled_l = [
                v if s.temperature is not None else None
                for v, s in zip(scaled.tolist(), seqs, strict=True)
            ]
        out: list[tuple[_Sequence, Item]] = []
        failed = {id(seq) for seq, _ in broken}
        for i, seq in enumerate(seqs):
            if id(seq) in failed:
                seq.done = True  # retired with this step, its place freed
                continue
            token = chosen_l[i]
            if seq.constraint is not None:
                seq.constraint.advance(token)
            seq.generated += 1
            seq.last_token = token
            finish: FinishReason | None = None
            if token in self._eos:
                finish = "stop"
            elif seq.generated >= seq.sampling.max_tokens:
                finish = "length"
            top = tops[i][: seq.sampling.top_logprobs]
            if finish is not None:
                seq.done = True
            out.append((seq, _Token(token, chosen_lp_l[i], top, finish, scaled_l[i])))
        _deliver(out + broken)

    def _retire(
        self, running: list[_Sequence], batch: RunningBatch
    ) -> tuple[list[_Sequence], RunningBatch | None]:
        with self._wake:
            keep = [i for i, s in enumerate(running) if not (s.done or s.aborted)]
            for s in running:
                if s.done or s.aborted:
                    self._by_id.pop(s.request_id, None)
        if len(keep) == len(running):
            return running, batch
        if not keep:
            return [], None
        return [running[i] for i in keep], batch.select(keep)


def _deliver(items: list[tuple[_Sequence, Item]]) -> None:
    """Hand a step's results to their event loops: one wake-up per loop, not per token."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Item]]] = {}
    for seq, item in items:
        by_loop.setdefault(seq.loop, []).append((seq, item))
    for loop, batch in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_put_all, batch)


def _put_all(batch: list[tuple[_Sequence, Item]]) -> None:
    for seq, item in batch:
        seq.queue.put_nowait(item)


def _sample_row(
    logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(0) - sorted_p > sampling.top_p
        sorted_p[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return torch.multinomial(probs.cpu(), 1, generator=generator)[0]
