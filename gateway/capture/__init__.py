"""Capture: escalated and audited pairs, off the request path, into a Redis stream."""

from gateway.capture.base import (
    SCHEMA_VERSION,
    CapturedRoute,
    CaptureRecord,
    CaptureSink,
    UnknownSchema,
    new_record_id,
)
from gateway.capture.recorder import CaptureRecorder
from gateway.capture.redaction import Redactor
from gateway.capture.spool import Spool

__all__ = [
    "SCHEMA_VERSION",
    "CaptureRecord",
    "CaptureRecorder",
    "CaptureSink",
    "CapturedRoute",
    "Redactor",
    "Spool",
    "UnknownSchema",
    "new_record_id",
]
