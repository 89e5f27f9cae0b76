import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tutor.settings")
application = get_wsgi_application()

# The web process serves many short requests from threads under one GIL. Python's default switch
# interval (5 ms) lets a thread that is done with its database call wait up to 5 ms for the GIL while
# another thread runs; 1 ms measured better on every count for cache hits with 10 clients on 2 cores
# (p50 24 vs 26 ms, p99 40 vs 46 ms, 408 vs 365 requests/s; bench/RESULTS.md). The engine is not
# affected: it runs in its own process (solver.engine_process).
sys.setswitchinterval(0.001)
