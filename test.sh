#!/usr/bin/env bash
# Run every check and the whole test suite (slow tests included): lint, migrations, pytest on SQLite,
# then the database tests again on PostgreSQL when one is reachable at 127.0.0.1:5432.
# Usage: ./test.sh [extra pytest args]      Quick run: ./test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"
export DEBUG=True SECRET_KEY=test-only-key
.venv/bin/ruff check .
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null
.venv/bin/python -m pytest "$@"
if [[ "${SKIP_POSTGRES:-}" != "1" ]] && .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then
  echo "==> database tests again on PostgreSQL"
  DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
    .venv/bin/python -m pytest -m "django_db or not slow" -q "$@" $(ls tests/test_site_*.py tests/test_api*.py tests/test_precompute*.py 2>/dev/null)
fi
