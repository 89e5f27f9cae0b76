"""The tutor's use cases, one module per use case, and the only package that calls `solver`.

`runtime` (the engine, the answer cache, the SQLite writer lock of this process), `text` (the rules for a
question's text), `asking` (a student's question), `live` (live generation, worked solutions towards an
answer key), `bank` (problems, topics, reviews, aliases and blocks, missed questions, the fixture bank),
`precompute` (batch runs), `packs` (answer packs), `tokens` (API tokens), `bankcache` (this process's
answer cache from load to save) and `workers` (background workers' heartbeats, settling a dead worker's
tasks). Callers import the module
they use: `from tutor.services import asking`. Nothing is re-exported here.
"""
