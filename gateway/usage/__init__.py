"""What the gateway answered and spent, per UTC day, task and client key: the ledger the
cost report (``distillgate report cost``) and ``distillgate keys usage`` read."""

from gateway.usage.ledger import UsageLedger, read_usage, usage_key
from gateway.usage.report import CostRow, cost_rows, daily_split

__all__ = ["CostRow", "UsageLedger", "cost_rows", "daily_split", "read_usage", "usage_key"]
