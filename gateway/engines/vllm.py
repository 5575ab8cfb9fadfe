"""The production student: vLLM's async engine (``AsyncLLM``) inside the gateway process.

No extra HTTP hop: requests go from serving straight into vLLM's scheduler, one engine
per process and GPU. vllm is imported when the engine starts, never at import time, so
the gateway installs, imports and tests without it (``pip install 'distillgate[gpu]'``).

Prompts are token ids (``prompts.py``: the tokenizer's chat template, as the CPU engine
reads them) sent as a ``TokensPrompt``, so vLLM adds no second BOS. Each request asks for
``logprobs=k`` and ``output_kind=DELTA``: every output carries only the new tokens.

Confidence: vLLM reports the top-k logprobs of the raw model distribution, before any
sampling temperature or penalties (its default ``logprobs_mode``, raw logprobs), which is
what the calibrator was fitted on. The calibrated per-token probability is the chosen
logprob renormalised over those k at the calibrator's T (``renormalized_logprob``).

Aborts: cancelling or closing the consumer of ``generate`` makes vLLM's own generator
abort the request (it catches the cancellation and calls ``abort``).

Adapters: a student folder that is a LoRA adapter runs on its base with LoRA enabled, each
request carrying the adapter's ``LoRARequest``. ``SharedBases`` keeps one engine per base
model and engine settings, so several tasks (or a task and its next version) whose
adapters share a base share one engine and one GPU; the base loads once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration import renormalized_logprob
from gateway.engines.base import (
    FinishReason,
    GenerationRequest,
    ScoredText,
    TokenDelta,
    TokenLogprob,
)
from gateway.engines.detokenizer import IncrementalDetokenizer, TokenTexts
from gateway.engines.prompts import (
    answer_ids,
    prompt_ids,
    room_after,
    split_text,
    trained_prompt_limit,
)
from gateway.engines.student_folder import StudentFolder, open_student
from gateway.errors import EngineError, InvalidRequest

__all__ = ["AdapterEngine", "SharedBases", "VLLMEngine", "vllm_available"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


@dataclass(frozen=True)
class _Served:
    lora: Any  # vLLM's LoRARequest for an adapter; None for the engine's own whole model
    user_limit: int | None  # the last user turn cut as this student was trained


class VLLMEngine:
    """``StudentEngine`` on ``vllm.v1.engine.async_llm.AsyncLLM``.

    Parameters mirror vLLM's engine arguments, set explicitly rather than left to vLLM's
    defaults (which size for big models): ``max_num_seqs`` bounds the running batch,
    ``max_logprobs`` the k a request may ask for, ``gpu_memory_utilization`` the KV cache.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        max_num_seqs: int = 256,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        max_logprobs: int = 20,
        confidence_top_k: int = 20,
        max_loras: int = 4,
        max_lora_rank: int = 64,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.student = open_student(self.model_dir)
        self.engine_args: dict[str, Any] = {
            "model": str(self.student.weights),
            "tokenizer": str(self.student.tokenizer),
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "enforce_eager": enforce_eager,
            "tensor_parallel_size": tensor_parallel_size,
            "max_logprobs": max_logprobs,
            "disable_log_stats": False,
            # Structured answers through llguidance, as the embedded engine constrains them,
            # compact (no whitespace between tokens), as the students are trained to write.
            "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
        }
        if self.student.is_adapter:
            self.engine_args |= {
                "enable_lora": True,
                "max_loras": max_loras,
                "max_lora_rank": max_lora_rank,
            }
        self.confidence_top_k = min(confidence_top_k, max_logprobs)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._eos: frozenset[int] = frozenset()
        self._special: frozenset[int] = frozenset()
        self._max_logprobs = max_logprobs
        self._own = _Served(None, trained_prompt_limit(self.model_dir))
        self._lora_ids: dict[Path, int] = {}
        self._max_model_len = 0

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Build the engine inside the running event loop (AsyncLLM binds to it)."""
        if self._engine is not None:
            return
        try:
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError(
                f"the vllm engine needs vllm: pip install 'distillgate[gpu]' on a GPU machine, "
                f"scripts/vllm_tier install on a CPU ({exc})"
            ) from None
        args = {k: v for k, v in self.engine_args.items() if v is not None}
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        self._tokenizer = AutoTokenizer.from_pretrained(self.student.tokenizer)
        self._token_text = TokenTexts(self._tokenizer)
        self._eos = self.student.stop_ids(self._tokenizer)
        self._special = frozenset(self._tokenizer.all_special_ids) | self._eos
        self._max_model_len = int(self._engine.model_config.max_model_len)
        if self.student.is_adapter:
            self._own = self.served(self.student)

    def served(self, student: StudentFolder) -> _Served:
        """How requests for ``student`` (an adapter on this engine's base) are sent."""
        from vllm.lora.request import LoRARequest

        if not student.is_adapter or student.base != self.student.weights:
            raise ValueError(f"{student.path} is not an adapter on {self.student.weights}")
        lora_id = self._lora_ids.setdefault(student.path, len(self._lora_ids) + 1)
        lora = LoRARequest(f"adapter-{lora_id}", lora_id, str(student.path))
        return _Served(lora, trained_prompt_limit(student.path))

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def check_health(self) -> None:
        if self._engine is None:
            raise EngineError("the vLLM engine is not running")
        try:
            await self._engine.check_health()
        except Exception as exc:
            raise EngineError("the vLLM engine is not healthy") from exc

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    # -- requests ----------------------------------------------------------------------
    def encode(self, request: GenerationRequest, served: _Served | None = None) -> list[int]:
        return prompt_ids(self._tokenizer, request, (served or self._own).user_limit)

    def encode_answer(
        self, request: GenerationRequest, answer: str, served: _Served | None = None
    ) -> list[int]:
        """The ids this student generates to give ``answer``, its end-of-turn id included."""
        limit = (served or self._own).user_limit
        return answer_ids(self._tokenizer, request, answer, self._eos, limit)

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    async def score_ids(
        self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
    ) -> list[list[tuple[float, list[float]]]]:
        return await self.score_ids_for(self._own, prompts, answers)

    def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        return self.generate_for(self._own, request)

    async def score(self, request: GenerationRequest, text: str, *, logprobs: bool) -> ScoredText:
        return await self.score_for(self._own, request, text, logprobs=logprobs)

    async def generate_for(
        self, served: _Served, request: GenerationRequest
    ) -> AsyncGenerator[TokenDelta, None]:
        """Long because vLLM's outputs are translated to TokenDeltas inline, on the hot path,
        without per-token helper calls."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        await self.check_health()
        ids = self.encode(request, served)
        room = room_after(ids, self._max_model_len, request)
        s = request.sampling
        k = s.top_logprobs
        # The confidence renormalises over the engine's k whatever top_logprobs a client
        # asks for, as calibration (``score_ids_for``) did.
        ck = self.confidence_top_k
        if request.confidence_temperature is not None:
            k = max(k, ck)
        # Asked for a few more, so that k remain once special tokens are left out.
        asked = min(k + len(self._special), self._max_logprobs) if s.top_logprobs else k
        # Text is decoded here from the ids: vLLM's detokenizer would also decode every
        # alternative of every token (a quarter of the gateway's time on a small student).
        # It is kept where stop strings need it, to stop the generation itself.
        own = None if s.stop else IncrementalDetokenizer(self._decode)
        params = SamplingParams(
            n=1,
            max_tokens=min(s.max_tokens, room),
            temperature=s.temperature,  # 0: greedy
            top_p=s.top_p,
            seed=s.seed,
            stop=list(s.stop) or None,
            logprobs=asked,
            detokenize=own is None,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=None
            if s.json_schema is None
            else StructuredOutputsParams(json=s.json_schema),
        )
        t = request.confidence_temperature
        name = self._token_text
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=ids),
                params,
                request.request_id,
                lora_request=served.lora,
            ):
                comp = out.outputs[0]
                new = list(comp.token_ids)
                last = len(new) - 1
                for i, token_id in enumerate(new):
                    alternatives = comp.logprobs[i] if comp.logprobs else {}
                    chosen = alternatives.get(token_id)
                    logprob = float(chosen.logprob) if chosen is not None else 0.0
                    ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank or 0)
                    top = [(tid, lp) for tid, lp in ranked if (lp.rank or 0) <= ck][:ck]
                    shown = [(tid, lp) for tid, lp in ranked if tid not in self._special]
                    finish = _finish(comp.finish_reason) if out.finished and i == last else None
                    end = finish == "stop" and token_id in self._eos
                    if own is None:
                        text = comp.text if i == last else ""
                    else:
                        text = own.push(token_id) if token_id not in self._eos else ""
                        text += own.flush() if finish is not None else ""
                    yield TokenDelta(
                        token_id=token_id,
                        text=text,
                        token=name(token_id),
                        logprob=logprob,
                        top_logprobs=tuple(
                            TokenLogprob(tid, name(tid), float(lp.logprob))
                            for tid, lp in shown[: s.top_logprobs]
                        ),
                        finish_reason=finish,
                        end=end,
                        prompt_tokens=len(ids),
                        scaled_logprob=(
                            renormalized_logprob(logprob, [lp.logprob for _, lp in top], t)
                            if t is not None
                            else None
                        ),
                    )
        except (InvalidRequest, EngineError):
            raise
        except ValueError as exc:  # vLLM's request validation
            raise InvalidRequest(f"The student refused the request: {exc}") from None
        except Exception as exc:  # EngineDeadError, EngineGenerateError: cancellation passes
            raise EngineError("the vLLM engine failed while generating") from exc

    async def score_for(
        self, served: _Served, request: GenerationRequest, text: str, *, logprobs: bool
    ) -> ScoredText:
        """Teacher forcing through vLLM's prompt logprobs (``_prompt_logprobs``)."""
        prompt = self.encode(request, served)
        ids, pieces = split_text(self._tokenizer, text)
        scored: list[tuple[float, list[tuple[int, float]]]] = [(0.0, [])] * len(ids)
        k = request.sampling.top_logprobs
        if logprobs and ids:
            room_after([*prompt, *ids], self._max_model_len, request)
            asked = min(k + len(self._special), self._max_logprobs)
            positions = await self._prompt_logprobs(
                served, prompt, ids, asked, f"{request.request_id}-score"
            )
            scored = []
            for token_id, alternatives in zip(ids, positions, strict=True):
                ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank or 0)
                top = [(t, float(lp.logprob)) for t, lp in ranked if t not in self._special]
                scored.append((float(alternatives[token_id].logprob), top[:k]))
        return ScoredText.of(len(prompt), ids, pieces, scored, self._token_text)

    async def score_ids_for(
        self, served: _Served, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
    ) -> list[list[tuple[float, list[float]]]]:
        """Teacher forcing of token ids, for calibration: per answer token, its logprob and
        the top-k logprobs serving's confidence renormalises over (``generate_for``'s
        ``top``: the same k, special tokens included), all requests in one batch."""
        k = self.confidence_top_k
        batch = uuid.uuid4().hex[:8]

        async def one(i: int) -> list[tuple[float, list[float]]]:
            ids = list(answers[i])
            if not ids:
                return []
            positions = await self._prompt_logprobs(
                served, list(prompts[i]), ids, k, f"score-{batch}-{i}"
            )
            rows = []
            for token_id, alternatives in zip(ids, positions, strict=True):
                ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank or 0)
                top = [float(lp.logprob) for _, lp in ranked if (lp.rank or 0) <= k][:k]
                rows.append((float(alternatives[token_id].logprob), top))
            return rows

        return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))

    async def _prompt_logprobs(
        self, served: _Served, prompt: list[int], ids: list[int], k: int, request_id: str
    ) -> list[Any]:
        """vLLM's top-``k`` logprobs at each of ``ids``' positions after ``prompt``: the two
        go in as one prompt, one token is generated, and the positions are read back."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=k,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final: Any = None
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=[*prompt, *ids]),
                params,
                request_id,
                lora_request=served.lora,
            ):
                final = out
        except Exception as exc:
            raise EngineError("the vLLM engine failed while scoring") from exc
        positions = list((final.prompt_logprobs or [])[len(prompt) :]) if final else []
        if len(positions) != len(ids):
            raise EngineError("the vLLM engine returned no prompt logprobs to score with")
        return positions


def _finish(reason: str | None) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop"
    raise EngineError(f"the vLLM engine ended the answer with {reason!r}")


class AdapterEngine:
    """``StudentEngine`` for one adapter, on a base engine it shares (``SharedBases``)."""

    def __init__(self, bases: SharedBases, key: str, student: StudentFolder) -> None:
        self._bases, self._key, self.student = bases, key, student
        self._engine: VLLMEngine | None = None
        self._served: _Served | None = None

    def _parts(self) -> tuple[VLLMEngine, _Served]:
        if self._engine is None or self._served is None:
            raise EngineError("the vLLM adapter engine is not started")
        return self._engine, self._served

    async def start(self) -> None:
        if self._engine is None:
            engine = await self._bases.acquire(self._key)
            self._engine, self._served = engine, engine.served(self.student)

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine = self._served = None
            await self._bases.release(self._key)

    async def check_health(self) -> None:
        await self._parts()[0].check_health()

    async def abort(self, request_id: str) -> None:
        await self._parts()[0].abort(request_id)

    def encode(self, request: GenerationRequest) -> list[int]:
        engine, served = self._parts()
        return engine.encode(request, served)

    def encode_answer(self, request: GenerationRequest, answer: str) -> list[int]:
        engine, served = self._parts()
        return engine.encode_answer(request, answer, served)

    async def score_ids(
        self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
    ) -> list[list[tuple[float, list[float]]]]:
        engine, served = self._parts()
        return await engine.score_ids_for(served, prompts, answers)

    def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        engine, served = self._parts()
        return engine.generate_for(served, request)

    async def score(self, request: GenerationRequest, text: str, *, logprobs: bool) -> ScoredText:
        engine, served = self._parts()
        return await engine.score_for(served, request, text, logprobs=logprobs)


class SharedBases:
    """One vLLM engine per base model and engine settings, started by the first adapter
    that needs it and shut down when the last one using it closes."""

    def __init__(self) -> None:
        self._engines: dict[str, tuple[VLLMEngine, int]] = {}
        self._makers: dict[str, Any] = {}

    def adapter(self, student_dir: Path, settings: dict[str, Any]) -> AdapterEngine:
        """``settings``: the ``VLLMEngine`` keyword arguments (the task's ``[engine]``)."""
        student = open_student(student_dir)
        if not student.is_adapter:
            raise ValueError(f"{student_dir} is not an adapter")
        key = json.dumps([str(student.base), settings], sort_keys=True)
        self._makers.setdefault(key, lambda: VLLMEngine(student.path, **settings))
        return AdapterEngine(self, key, student)

    async def acquire(self, key: str) -> VLLMEngine:
        engine, users = self._engines.get(key) or (None, 0)
        if engine is None:
            engine = self._makers[key]()
            await engine.start()
        self._engines[key] = (engine, users + 1)
        return engine

    async def release(self, key: str) -> None:
        engine, users = self._engines[key]
        if users > 1:
            self._engines[key] = (engine, users - 1)
            return
        del self._engines[key]
        await engine.aclose()
