"""Every error a client can see: its status, OpenAI type and code (``api/errors.py`` renders it).

    GatewayError                      500  api_error
    ├── InvalidRequest                400  invalid_request_error
    │   └── PayloadTooLarge           413  invalid_request_error
    ├── Unauthorized                  401  authentication_error
    ├── UnknownTask                   404  invalid_request_error (code model_not_found)
    ├── ReloadRefused                 409  invalid_request_error (code reload_refused)
    ├── Overloaded                    429/503  (carries retry_after)
    ├── RateLimited                   429  requests | tokens (code rate_limit_exceeded)
    ├── BudgetSpent                   429  insufficient_quota (a teacher budget is spent)
    ├── DeadlineExceeded              504  (the task's overall request deadline passed)
    ├── EngineError                   500  api_error
    │   ├── EngineTimeout             504  (a remote student did not answer in time)
    │   └── EngineUnavailable         503  (a remote student cannot be reached)
    ├── TeacherError                  502  api_error (teacher_error)
    │   ├── TeacherTimeout            504  (the teacher's deadline passed)
    │   └── TeacherUnavailable        503  (circuit open, or retries spent)
    └── CaptureError                  never reaches a client: capture is off the request path

Adapters translate foreign exceptions (torch, SDKs) into this tree at their boundary, so
``api/errors.py`` renders every failure and no stack trace reaches a client.
"""

from __future__ import annotations

import math

__all__ = [
    "BudgetSpent",
    "CaptureError",
    "DeadlineExceeded",
    "EngineError",
    "EngineTimeout",
    "EngineUnavailable",
    "GatewayError",
    "InvalidRequest",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "ReloadRefused",
    "TeacherError",
    "TeacherTimeout",
    "TeacherUnavailable",
    "Unauthorized",
    "UnknownTask",
]


class GatewayError(Exception):
    status_code = 500
    error_type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class Unauthorized(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class UnknownTask(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class Overloaded(GatewayError):
    """Too much work queued (429) or the service cannot take work now (503)."""

    error_type = "server_overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, status_code: int = 429) -> None:
        super().__init__(message, code="overloaded")
        self.retry_after = retry_after
        self.status_code = status_code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class RateLimited(GatewayError):
    """A client key spent its per-minute allowance; OpenAI's body and ``Retry-After``."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: float) -> None:
        super().__init__(message)
        self.error_type = kind  # "requests" or "tokens", as OpenAI names its limits
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BudgetSpent(GatewayError):
    """A teacher budget is spent and the task serves no student answer in its place
    (``on_budget = "error"``, or there is no student). OpenAI's quota error: the SDK does
    not retry it (``x-should-retry: false``); ``Retry-After`` is the budget's reset."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, budget: str, retry_after: float) -> None:
        super().__init__(message)
        self.budget = budget  # "key:<name>:day" and the like, also in a response header
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "x-should-retry": "false",
            "x-distillgate-budget-spent": self.budget,
        }


class DeadlineExceeded(GatewayError):
    status_code = 504
    error_type = "timeout_error"
    code = "request_timeout"


class EngineError(GatewayError):
    """The student engine failed; the message is safe to show, the cause is logged."""


class EngineTimeout(EngineError):
    status_code = 504
    code = "student_timeout"


class EngineUnavailable(EngineError):
    status_code = 503
    code = "student_unavailable"


class ReloadRefused(GatewayError):
    """The task files cannot be served as they are; the running deployment is kept."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "reload_refused"


class TeacherError(GatewayError):
    """The teacher failed. ``retryable`` marks failures worth another try (429, 5xx, 529)."""

    status_code = 502
    code = "teacher_error"

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class TeacherTimeout(TeacherError):
    status_code = 504
    code = "teacher_timeout"


class TeacherUnavailable(TeacherError):
    status_code = 503
    code = "teacher_unavailable"


class CaptureError(GatewayError):
    """A capture sink could not store records (Redis down or slow). The recorder spools them;
    no client ever sees this error."""
