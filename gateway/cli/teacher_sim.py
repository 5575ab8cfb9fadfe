"""``distillgate teacher-sim``: the teacher simulator as its own server."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.settings import Settings

__all__ = ["run", "teacher_sim"]


def teacher_sim(data: Path, host: str, port: int, accuracy: float, latency_ms: float) -> None:
    import uvicorn

    from gateway.examples import read_examples
    from gateway.simulator import SimulatedAnswers, create_sim_app

    answers = SimulatedAnswers.from_examples(read_examples(data), accuracy=accuracy)
    known = len(answers.references)
    print(f"teacher simulator: {known} known prompts, accuracy {accuracy}, latency {latency_ms} ms")
    uvicorn.run(
        create_sim_app(answers, latency_s=latency_ms / 1000),
        host=host,
        port=port,
        log_level="warning",
    )


def run(args: argparse.Namespace, settings: Settings) -> None:
    teacher_sim(args.data, args.host, args.port, args.accuracy, args.latency_ms)
