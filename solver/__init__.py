"""Suanjing's solver: a plain Python library (no Django) that owns the model store, the INT8
OpenVINO engine, prompts, answer parsing, the semantic answer cache, batch precompute and answer packs.

`import solver` is cheap: openvino, torch and sentence-transformers are imported lazily inside the
classes that need them. Settings come in as constructor arguments, never from os.environ.
"""

__version__ = "0.1.0"
