"""Calibrated confidence for a distilled student: features, temperature scaling,
thresholds with a guarantee, metrics, and the statistics of promotion and rollback.
scikit-learn style; no I/O outside ``artifact``."""

from calibration.artifact import (
    Calibration,
    load_calibration,
    save_calibration,
    student_fingerprint,
)
from calibration.features import (
    TEXT_FEATURES,
    confidence,
    renormalized_logprob,
    text_features,
    token_features,
)
from calibration.goal import RoutingGoal
from calibration.logistic import LogisticCalibrator
from calibration.metrics import (
    accuracy_score,
    aurc_loss,
    brier_score_loss,
    expected_calibration_error,
    log_loss,
    maximum_calibration_error,
    reliability_curve,
    risk_coverage_curve,
)
from calibration.promotion import (
    NOTHING_ACCEPTED,
    AgreementSPRT,
    GateResult,
    Outcome,
    mcnemar_greater,
    promotion_gate,
)
from calibration.routing import RoutingCurve, apgr_score, cpt, routing_curve
from calibration.temperature import AnswerTemperatureScaler, NotFittedError, TemperatureScaler
from calibration.threshold import ThresholdSelector

__all__ = [
    "NOTHING_ACCEPTED",
    "TEXT_FEATURES",
    "AgreementSPRT",
    "AnswerTemperatureScaler",
    "Calibration",
    "GateResult",
    "LogisticCalibrator",
    "NotFittedError",
    "Outcome",
    "RoutingCurve",
    "RoutingGoal",
    "TemperatureScaler",
    "ThresholdSelector",
    "accuracy_score",
    "apgr_score",
    "aurc_loss",
    "brier_score_loss",
    "confidence",
    "cpt",
    "expected_calibration_error",
    "load_calibration",
    "log_loss",
    "maximum_calibration_error",
    "mcnemar_greater",
    "promotion_gate",
    "reliability_curve",
    "renormalized_logprob",
    "risk_coverage_curve",
    "routing_curve",
    "save_calibration",
    "student_fingerprint",
    "text_features",
    "token_features",
]
