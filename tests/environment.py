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
