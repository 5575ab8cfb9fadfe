"""``distillgate keys new|hash|usage``: client API keys for the key file, and what each
has spent on the teacher (today, this month, against its budgets)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

from gateway.settings import Settings

__all__ = ["run", "usage"]


def run(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.keys import key_digest, new_key

    if args.action == "hash":
        print(key_digest(sys.stdin.readline().strip()).hex())
        return
    key = new_key()
    entry = ["[[keys]]", f"name = {json.dumps(args.name)}", f'sha256 = "{key_digest(key).hex()}"']
    if args.task:
        entry.append(f"tasks = {json.dumps(args.task)}")
    if args.tenant:
        entry.append(f"tenant = {json.dumps(args.tenant)}")
    for field in (
        "requests_per_minute",
        "tokens_per_minute",
        "teacher_usd_per_day",
        "teacher_usd_per_month",
    ):
        if getattr(args, field) is not None:
            entry.append(f"{field} = {getattr(args, field)}")
    print(f"key (shown once; give it to the client, store only the entry below):\n{key}\n")
    print("\n".join(entry))


async def _usage(settings: Settings) -> list[dict[str, Any]]:
    from gateway.budgets import TeacherBudgets, all_budgets
    from gateway.keys import KeyRing
    from gateway.redis_clients import async_redis
    from gateway.usage import read_usage

    keys = list(KeyRing.load(settings.api_keys, settings.api_keys_file))
    today = dt.datetime.now(dt.UTC).date()
    days = [today.replace(day=d).isoformat() for d in range(1, today.day + 1)]
    client = async_redis(settings.redis_target)
    budgets = TeacherBudgets(client)
    try:
        ledger = await read_usage(client, days)
        figures = await budgets.figures(all_budgets(keys, ()))
    finally:
        await budgets.aclose()
    rows = []
    for key in sorted(keys, key=lambda k: k.name):
        month = {
            d: sum(v for (_, k, m), v in u.items() if k == key.name and m.startswith("teacher_usd"))
            for d, u in ledger.items()
        }
        rows.append(
            {
                "key": key.name,
                "tenant": key.tenant_name,
                "teacher_usd_today": round(month.get(today.isoformat(), 0.0), 6),
                "teacher_usd_this_month": round(sum(month.values()), 6),
                "budgets": [f.as_dict() for f in figures if f.budget.name == key.name],
            }
        )
    return rows


def usage(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.redis_url:
        raise SystemExit("DISTILLGATE_REDIS_URL is empty: spend is counted in Redis")
    rows = asyncio.run(_usage(settings))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no client keys configured (DISTILLGATE_API_KEYS / DISTILLGATE_API_KEYS_FILE)")
    for row in rows:
        print(
            f"{row['key']} (tenant {row['tenant']}): teacher ${row['teacher_usd_today']:.4f} "
            f"today, ${row['teacher_usd_this_month']:.4f} this month"
        )
        for b in row["budgets"]:
            print(
                f"  per {b['period']}: ${b['spent_usd']:.4f} of ${b['limit_usd']:g} spent, "
                f"${b['left_usd']:.4f} left, resets at {b['resets_at']}"
            )
        if not row["budgets"]:
            print("  no teacher budget")
