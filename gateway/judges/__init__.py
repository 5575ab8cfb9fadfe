"""Judges: whether a free-text answer meets its task's rubric.

A free-text task (a description written from attributes, a reply, a summary) has no exact
answer to compare; a judge reads the input, the rubric and the answer and says acceptable or
not, with its reason. ``Judge`` is the seam; ``ProgramJudge`` runs a rubric a program can
check (a Python function named by import path: ``gateway.judges.e2e:judge`` for the E2E
demo).
"""

from gateway.judges.base import Judge, JudgeRequest, Verdict
from gateway.judges.program import ProgramJudge, load_function

__all__ = ["Judge", "JudgeRequest", "ProgramJudge", "Verdict", "load_function"]
