"""Loaded by pytest before Django (`-p tests.environment` in pyproject.toml): the test settings.

Tests run the one settings file with development values; no separate settings module exists.
"""

import os
import socket
import tempfile

os.environ.setdefault("DEBUG", "True")
os.environ.setdefault("SECRET_KEY", "test-only-key")
os.environ.setdefault("SUANJING_VAR", tempfile.mkdtemp(prefix="suanjing-test-var-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The site's local engine service listens on a fixed port (8765); tests take a free one, so that a test
# run never meets (or is met by) a site running on this machine.
with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    os.environ.setdefault("SUANJING_ENGINE_PORT", str(_s.getsockname()[1]))
# The site's default embedder backend is OpenVINO; exporting it inside a pytest process that already
# holds torch and usearch has stalled here, so the site tests embed with torch (same vectors, see
# tests/test_cache.py, which checks the OpenVINO backend in its own process).
os.environ.setdefault("SUANJING_EMBEDDER_BACKEND", "torch")
