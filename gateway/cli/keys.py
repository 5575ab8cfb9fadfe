"""``distillgate keys new|hash``: client API keys for the key file."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.settings import Settings

__all__ = ["run"]


def run(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.keys import key_digest, new_key

    if args.action == "hash":
        print(key_digest(sys.stdin.readline().strip()).hex())
        return
    key = new_key()
    entry = ["[[keys]]", f"name = {json.dumps(args.name)}", f'sha256 = "{key_digest(key).hex()}"']
    if args.task:
        entry.append(f"tasks = {json.dumps(args.task)}")
    for field in ("requests_per_minute", "tokens_per_minute"):
        if getattr(args, field) is not None:
            entry.append(f"{field} = {getattr(args, field)}")
    print(f"key (shown once; give it to the client, store only the entry below):\n{key}\n")
    print("\n".join(entry))
