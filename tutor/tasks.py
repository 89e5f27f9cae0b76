"""Background tasks (Django's tasks API via django-tasks; the queue is the site's database).

Owns: the task entry points workers run. The work itself is in `tutor.services` (`precompute.work_on_run`,
`live.work_on_guided`), so the command line (`precompute --inline`) and the workers share one code path.
The services queue these tasks by name (`tutor.services.runtime.enqueue`), so imports go one way.
Start a worker with `python manage.py worker` (several, on one machine or many, may share the queue);
not the stock `db_worker`, which keeps no heartbeat, so the others would settle its tasks as orphaned.
"""

from __future__ import annotations

from django_tasks import task


@task()
def process_run(run_id: int) -> dict:
    """Answer the pending items of a precompute run until none remain (or the run is cancelled)."""
    from tutor.services import precompute

    progress = precompute.work_on_run(run_id=run_id)
    return progress.snapshot() if progress is not None else {}


@task()
def generate_towards_answer(problem_id: int) -> dict:
    """A worked solution towards a problem's reference answer (students are served the answer key
    meanwhile), stored as verified when it reaches that answer, else as failed for a teacher."""
    import logging

    from tutor.errors import EngineUnavailable
    from tutor.services import live

    try:
        return {"outcome": live.work_on_guided(problem_id=problem_id)}
    except EngineUnavailable:
        # The edge of the work: the next ask after GUIDED_EVERY_H queues it again.
        logging.getLogger(__name__).error("no engine for a guided solution", exc_info=True)
        return {"outcome": "no_model"}
