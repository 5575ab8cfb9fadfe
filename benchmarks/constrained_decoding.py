"""What constrained decoding costs per token, beside unconstrained decoding, in one run.

The embedded engine answers the same prompts greedily, one request at a time, alternating
free and constrained by a JSON Schema (the SNIPS answer schema by default), so the two
share the machine's noise. Per-token time is the figure: the answers differ in length.
Then the mask alone: llguidance (what the engine uses) and, when installed, xgrammar (vLLM's
default backend) on the same tokenizer, schema and token sequences, and each one's compile
time per schema. Prints a markdown table.

    python benchmarks/constrained_decoding.py --student models/smollm2-135m \\
        [--schema tasks/snips.schema.json] [--data data/snips/test.jsonl] [--prompts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.answers import AnswerCheck, canonical_json  # noqa: E402
from gateway.engines.base import GenerationRequest, Message, SamplingParams  # noqa: E402
from gateway.engines.transformers import TransformersEngine  # noqa: E402
from gateway.examples import read_examples  # noqa: E402


async def decode(
    engine: TransformersEngine, prompts: list[str], schema: str, max_tokens: int
) -> dict[str, list[float] | list[list[int]] | int]:
    free_s: list[float] = []
    bound_s: list[float] = []
    sequences: list[list[int]] = []
    valid = 0
    check = AnswerCheck(schema=json.loads(schema))
    for i, text in enumerate(prompts):
        for constrained in (False, True):
            sampling = SamplingParams(
                max_tokens=max_tokens, json_schema=schema if constrained else None
            )
            request = GenerationRequest(f"{i}-{constrained}", sampling, (Message("user", text),))
            started = time.perf_counter()
            deltas = [d async for d in engine.generate(request)]
            per_token = (time.perf_counter() - started) / len(deltas)
            (bound_s if constrained else free_s).append(per_token)
            if constrained:
                sequences.append([d.token_id for d in deltas if not d.end])
                valid += check.valid("".join(d.text for d in deltas))
    return {"free": free_s, "bound": bound_s, "sequences": sequences, "valid": valid}


def llguidance_mask_us(engine: TransformersEngine, schema: str, seqs: list[list[int]]) -> tuple:  # type: ignore[type-arg]
    from gateway.engines.grammar import JsonGrammars

    vocab = int(engine.model.get_output_embeddings().weight.shape[0])
    grammars = JsonGrammars(engine.tokenizer, vocab, engine._eos)
    started = time.perf_counter()
    grammars.constraint(schema)
    compile_ms = 1000 * (time.perf_counter() - started)
    times = []
    for seq in seqs:
        c = grammars.constraint(schema)
        for token in seq:
            t = time.perf_counter()
            c.allowed()
            times.append(time.perf_counter() - t)
            c.advance(token)
    return compile_ms, 1e6 * statistics.mean(times)


def xgrammar_mask_us(engine: TransformersEngine, schema: str, seqs: list[list[int]]) -> tuple:  # type: ignore[type-arg]
    try:
        import xgrammar as xgr
    except ImportError:
        return None, None
    vocab = int(engine.model.get_output_embeddings().weight.shape[0])
    info = xgr.TokenizerInfo.from_huggingface(engine.tokenizer, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info)
    started = time.perf_counter()
    compiled = compiler.compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))
    compile_ms = 1000 * (time.perf_counter() - started)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    times = []
    for seq in seqs:
        matcher = xgr.GrammarMatcher(compiled)
        for token in seq:
            t = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            times.append(time.perf_counter() - t)
            matcher.accept_token(token)
    return compile_ms, 1e6 * statistics.mean(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--schema", type=Path, default=ROOT / "tasks" / "snips.schema.json")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "snips" / "test.jsonl")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    schema = canonical_json(json.loads(args.schema.read_text()))
    prompts = [e.prompt or "" for e in read_examples(args.data)[: args.prompts]]

    async def run() -> dict[str, list[float] | list[list[int]] | int]:
        engine = TransformersEngine(args.student, max_batch_size=1, threads=args.threads)
        await engine.start()
        try:
            await decode(engine, prompts[:1], schema, 4)  # warm both paths
            out = await decode(engine, prompts, schema, args.max_tokens)
            out["llg"] = list(llguidance_mask_us(engine, schema, out["sequences"]))  # type: ignore[arg-type]
            out["xgr"] = list(xgrammar_mask_us(engine, schema, out["sequences"]))  # type: ignore[arg-type]
            return out
        finally:
            await engine.aclose()

    out = asyncio.run(run())
    free = 1000 * statistics.median(out["free"])  # type: ignore[arg-type]
    bound = 1000 * statistics.median(out["bound"])  # type: ignore[arg-type]
    print(f"{args.student.name}: {len(prompts)} prompts, one at a time, {args.threads} thread(s)")
    print(f"constrained answers valid: {out['valid']}/{len(prompts)}\n")
    print("| | ms per token (median) | ratio |\n| --- | --- | --- |")
    print(f"| unconstrained | {free:.2f} | 1.00 |")
    print(f"| constrained (llguidance) | {bound:.2f} | {bound / free:.3f} |\n")
    print("| mask library | compile ms per schema | mask µs per token |\n| --- | --- | --- |")
    for name, key in (("llguidance", "llg"), ("xgrammar", "xgr")):
        compile_ms, mask_us = out[key]  # type: ignore[misc]
        if compile_ms is None:
            print(f"| {name} | not installed | |")
        else:
            print(f"| {name} | {compile_ms:.1f} | {mask_us:.1f} |")


if __name__ == "__main__":
    main()
