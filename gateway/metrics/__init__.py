"""Prometheus metrics: the series counted as events happen (``series.py``) and the live
state read at scrape time (``live.py``).

Every name starts with ``distillgate_`` and none contains ``vllm`` (vLLM unregisters any
collector whose name does). Labels are bounded: task names come from the task files
(unknown ``model`` values are counted as ``unknown``), routes, reasons and error kinds
from the pipeline's enums and the errors' codes; never request or user ids.
"""

from gateway.metrics.live import LiveCollector, ServingSnapshot, VLLMPassthrough
from gateway.metrics.series import Metrics

__all__ = ["LiveCollector", "Metrics", "ServingSnapshot", "VLLMPassthrough"]
