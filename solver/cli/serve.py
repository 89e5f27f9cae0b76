"""`serve`: the engine as an OpenAI-compatible HTTP service (`solver.serve`)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from solver.cli.models import add_store_argument, default_store


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "serve",
        help="serve a prepared model over an OpenAI-compatible HTTP API",
        description="Serve one prepared model at /v1/completions, /v1/chat/completions and "
        "/v1/models, with /health and /metrics. Prints the base URL on standard output once listening.",
    )
    s.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    s.add_argument("--port", type=int, default=8100, help="default: 8100; 0 picks a free port")
    s.add_argument("--model", help="prepared model name (default: the best prepared one)")
    add_store_argument(s)
    s.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests that may wait for room in the engine; more get 429 (default: 64)",
    )
    s.add_argument(
        "--max-running",
        type=int,
        default=64,
        help="sequences decoded together (default: 64)",
    )
    s.add_argument("--max-tokens-limit", type=int, default=8192, help="largest max_tokens allowed")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    s.add_argument("--kv-cache-gb", type=float, default=1.0)
    s.add_argument(
        "--in-process",
        action="store_true",
        help="run the engine in the server's process (HTTP then waits behind decode steps)",
    )
    s.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one ends (solver.remote.start_local_service)",
    )
    s.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from solver.cli import UsageError
    from solver.engine import Engine, EngineError, EngineSettings
    from solver.engine_process import EngineProcess
    from solver.modelstore import ModelError, ModelStore
    from solver.serve import Service, ServiceSettings, run_service

    if args.max_queue < 0 or args.max_running < 1 or not 0 <= args.port <= 65535:
        raise UsageError("--max-queue must be >= 0, --max-running >= 1, --port 0-65535")
    try:
        model = ModelStore(args.store or default_store()).default(args.model)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine_settings = EngineSettings(
        threads=args.threads, kv_cache_gb=args.kv_cache_gb, max_num_seqs=args.max_running
    )
    kind = Engine if args.in_process else EngineProcess
    service = Service(
        ServiceSettings(
            model_name=model.name,
            max_queue=args.max_queue,
            max_running=args.max_running,
            max_tokens_limit=args.max_tokens_limit,
        ),
        lambda: kind(model.path, engine_settings),
        model.path,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent() -> None:
            # An orphan is adopted by init (or a subreaper): the parent id changes.
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    stop.set()

        threading.Thread(target=watch_parent, daemon=True).start()

    def announce(url: str) -> None:
        # The one line on standard output: solver.remote.start_local_service reads it.
        print(url, flush=True)
        print(f"serving {model.name} at {url} (loading the model ...)", file=sys.stderr, flush=True)

    try:
        run_service(service, args.host, args.port, announce=announce, stop=stop)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the port is taken, the address is not this machine's
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0
