"""Field scores of structured answers: precision, recall and F1 per field, and micro-averaged.

A field is a leaf of the answer's JSON (``intent``, ``slots.city``); a predicted field is
right when the reference has the same path with the same value. Per record: a right field
is a true positive; a predicted field that is wrong or absent from the reference a false
positive; a reference field the prediction misses or gets wrong a false negative (a wrong
value counts both ways, as slot-filling benchmarks score it). Pure functions of parsed
values; an answer that does not parse predicts no field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["field_scores", "leaves"]


def leaves(value: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a JSON value by dotted path; an empty object or list is no leaf."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out |= leaves(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out |= leaves(item, f"{prefix}.{i}" if prefix else str(i))
        return out
    return {prefix: value}


def field_scores(references: Sequence[object], predictions: Sequence[object | None]) -> dict:  # type: ignore[type-arg]
    """``{"fields": {path: {precision, recall, f1, support}}, "micro": {...}, "groups":
    {top-level key: {...}}}``; a group is every field under one top-level key (``slots``:
    the slot micro-F1)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for reference, prediction in zip(references, predictions, strict=True):
        gold = leaves(reference)
        guess = leaves(prediction) if prediction is not None else {}
        for path, value in guess.items():
            if path in gold and gold[path] == value:
                tp[path] += 1
            else:
                fp[path] += 1
        for path, value in gold.items():
            if guess.get(path, _MISSING) != value:
                fn[path] += 1
    paths = sorted(set(tp) | set(fp) | set(fn))
    groups: dict[str, list[str]] = {}
    for path in paths:
        if "." in path:
            groups.setdefault(path.split(".", 1)[0], []).append(path)
    return {
        "fields": {p: _prf(tp[p], fp[p], fn[p]) for p in paths},
        "micro": _prf(*(sum(c[p] for p in paths) for c in (tp, fp, fn))),
        "groups": {
            g: _prf(*(sum(c[p] for p in members) for c in (tp, fp, fn)))
            for g, members in groups.items()
        },
    }


_MISSING = object()


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
