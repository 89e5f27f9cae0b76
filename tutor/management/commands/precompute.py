"""manage.py precompute: fill the bank with checked answers (a run for the background workers, or inline)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from tutor import errors
from tutor.models import PrecomputeRun
from tutor.services import precompute


def parse_ids(value: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise CommandError(f"--ids {value!r}: use problem numbers separated by commas") from None
    if not ids or any(i <= 0 for i in ids):
        raise CommandError("--ids needs at least one positive problem number")
    return ids


class Command(BaseCommand):
    help = (
        "Precompute answers for bank problems. By default every problem without a servable answer; the "
        "run is queued for the workers (`manage.py db_worker`) and the command returns at once. "
        "--inline answers in this process with a progress bar (Ctrl-C stops cleanly; --resume continues)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--topic", default="", help="only problems of this topic")
        parser.add_argument("--tag", default="", help="only problems with this tag")
        parser.add_argument("--ids", default="", help="only these problems: 1,2,3")
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--stale",
            action="store_true",
            help="problems whose best answer came from another model manifest or prompt version",
        )
        which.add_argument(
            "--all", action="store_true", help="every selected problem, answered or not"
        )
        parser.add_argument("--samples", type=int, default=1, help="samples per problem (K)")
        parser.add_argument("--max-new-tokens", type=int, default=None)
        parser.add_argument("--limit", type=int, default=None, help="at most this many problems")
        parser.add_argument("--model", default="", help="model name (default: SUANJING_MODEL)")
        parser.add_argument(
            "--greedy", action="store_true", help="greedy decoding (one sample; no retries)"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--inline", action="store_true", help="answer in this process, with a progress bar"
        )
        mode.add_argument(
            "--wait",
            action="store_true",
            help="queue the run, then show its progress until it ends",
        )
        parser.add_argument("--resume", type=int, metavar="RUN", help="continue run RUN")
        parser.add_argument(
            "--force",
            action="store_true",
            help="with --resume: take back every running item now (when you know no worker is alive)",
        )
        parser.add_argument("--cancel", type=int, metavar="RUN", help="cancel run RUN")

    def handle(self, *args, **opts):
        if opts["cancel"]:
            run = self.get_run(opts["cancel"])
            try:
                precompute.cancel_run(run=run)
            except errors.RunRefused as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"run {run.pk}: cancelling; workers stop within seconds")
            return
        if opts["samples"] > 1 and opts["greedy"]:
            raise CommandError("--greedy gives one answer per problem: drop --samples or --greedy")
        if opts["resume"]:
            run = self.get_run(opts["resume"])
            todo = precompute.resume_run(run=run, enqueue=not opts["inline"], force=opts["force"])
            self.stdout.write(f"run {run.pk}: {todo} problems to do")
            if not todo:
                return
        else:
            run = self.create(opts)
        if opts["inline"]:
            self.run_inline(run)
        elif opts["wait"]:
            self.watch(run)
        else:
            self.stdout.write(
                f"run {run.pk} queued: {run.total} problems. Workers: `python manage.py db_worker`; "
                f"watch it on /runs/{run.pk} or with `python manage.py precompute --resume {run.pk} --wait`"
            )

    def get_run(self, run_id: int) -> PrecomputeRun:
        run = PrecomputeRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"there is no run {run_id}")
        return run

    def create(self, opts) -> PrecomputeRun:
        which = "stale" if opts["stale"] else "all" if opts["all"] else "unanswered"
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        selection = precompute.Selection(
            topic=opts["topic"],
            tag=opts["tag"],
            ids=parse_ids(opts["ids"]) if opts["ids"] else (),
            which=which,
            limit=opts["limit"],
        )
        try:
            return precompute.create_run(
                selection=selection,
                samples=opts["samples"],
                max_new_tokens=opts["max_new_tokens"],
                greedy=opts["greedy"],
                model=opts["model"],
                enqueue=not opts["inline"],
            )
        except (errors.RunRefused, errors.EngineUnavailable) as exc:
            raise CommandError(str(exc)) from None

    def run_inline(self, run: PrecomputeRun) -> None:
        from tqdm import tqdm

        stop = threading.Event()

        def on_signal(signum, frame) -> None:
            self.stderr.write("stopping: finishing what is stored, cancelling the rest…")
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=run.total, unit="problem", desc=f"run {run.pk}", file=self.stderr._out)

        def on_progress(progress) -> None:
            bar.update(progress.done - bar.n)
            eta = progress.eta_s()
            bar.set_postfix_str(
                f"{progress.tokens_per_s():.1f} tok/s, {progress.problems_per_hour():.0f} problems/h"
                + (f", {eta / 60:.0f} min left" if eta is not None else "")
            )

        try:
            progress = precompute.work_on_run(
                run_id=run.pk, fan_out=False, on_progress=on_progress, stop_requested=stop.is_set
            )
        except errors.EngineUnavailable as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.summary(run, progress)

    def watch(self, run: PrecomputeRun) -> None:
        import time

        from tqdm import tqdm

        bar = tqdm(total=run.total, unit="problem", desc=f"run {run.pk}", file=self.stderr._out)
        try:
            while True:
                run.refresh_from_db()
                figures = precompute.run_figures(run)
                bar.update(figures["finished"] - bar.n)
                bar.set_postfix_str(
                    f"{figures['tokens_per_s']:.1f} tok/s, {figures['problems_per_hour']:.0f} problems/h"
                )
                if not run.is_active:
                    break
                time.sleep(2)
        except KeyboardInterrupt:
            self.stderr.write("stopped watching; the run goes on")
        finally:
            bar.close()
        self.summary(run, None)

    def summary(self, run: PrecomputeRun, progress) -> None:
        run.refresh_from_db()
        f = precompute.run_figures(run)
        r = f["results"]
        self.stdout.write(
            f"run {run.pk} {run.status}: {f['finished']}/{f['total']} problems — {r['verified']} verified, "
            f"{r['unverified']} unverified, {r['failed']} failed, {f['items']['set_aside']} set aside; "
            f"{run.new_tokens} tokens"
            + (f", {progress.tokens_per_s():.1f} tok/s" if progress is not None else "")
        )
