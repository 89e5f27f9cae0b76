"""Loaded by pytest before Django (`-p tests.environment` in pyproject.toml): the test settings.

Tests run the one settings file with development values; no separate settings module exists.
"""

import os
import tempfile

os.environ.setdefault("DEBUG", "True")
os.environ.setdefault("SECRET_KEY", "test-only-key")
os.environ.setdefault("SUANJING_VAR", tempfile.mkdtemp(prefix="suanjing-test-var-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The site's default embedder backend is OpenVINO; exporting it inside a pytest process that already
# holds torch and usearch has stalled here, so the site tests embed with torch (same vectors, see
# tests/test_cache.py, which checks the OpenVINO backend in its own process).
os.environ.setdefault("SUANJING_EMBEDDER_BACKEND", "torch")
