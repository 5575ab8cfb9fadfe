"""``distillgate serve``: the gateway. A task without a ``[loop]`` gets its missing student
built and calibrated first; one with a loop is served by the teacher until its loop
promotes a first student."""

from __future__ import annotations

import argparse

from gateway.cli.calibrate import calibrate_task
from gateway.cli.student import build_student
from gateway.engines.student_folder import is_student
from gateway.settings import Settings
from gateway.tasks import load_tasks

__all__ = ["run", "serve"]


def serve(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.engines.factory import missing_dependency

    for task in load_tasks(settings.tasks_dir).values():
        problem = missing_dependency(task)
        if problem is not None:
            raise SystemExit(problem)
        if task.loop is not None:
            continue  # its loop trains and calibrates it in the background; the teacher answers
        if not is_student(task.student):
            if not settings.build_missing_students or task.build is None:
                raise SystemExit(f"task {task.name!r}: no student at {task.student}")
            print(f"task {task.name!r} has no student yet; building it first (one time).")
            build_student(task)
        if (
            task.calibrator is not None
            and not task.calibrator.is_file()
            and task.routing.calibration_data
        ):
            print(f"task {task.name!r} has no calibrator yet; calibrating it first (one time).")
            calibrate_task(task)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the gateway's own (gateway.access), with request and trace ids
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


def run(args: argparse.Namespace, settings: Settings) -> None:
    serve(settings)
