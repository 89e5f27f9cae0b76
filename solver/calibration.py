"""Fit and check the cache's learned decision rule on labelled development data.

This module owns `calibrate`: from a bank, labelled questions and a dense bank (the bank plus every
variant that must miss), it
1. splits the problems into a tuning part and a part kept apart (a stable hash of the bank text, so
   that every wording of one problem falls on the same side);
2. looks every question up once without a model, which records the features of every candidate that
   the exact rules let through (`solver.decision.compare`);
3. fits a logistic regression (scikit-learn, imported here only) on the tuning pairs: a candidate is a
   positive when it is the question's own problem and the question is a rewording (expect "hit"); a
   question whose wording keeps the answer but may not be served ("either") gives no pair for its own
   problem;
4. chooses `hit_at`, the lowest probability at which wrong hits on questions that must miss and wrong
   matches in the dense bank both stay under `max_wrong` on the tuning part, and `suggest_at`, the
   highest at which `find` of the rewordings are served or suggested;
5. replays the decisions of both parts with the fitted rule (`solver.cache.decide`), for the report.

It does not read files or print (that is `solver.cli.match`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from solver.cache import CandidateCheck, Decision, SemanticCache, decide
from solver.decision import FEATURES, DecisionModel
from solver.embed import Embedder


@dataclass
class Part:
    problems: int
    queries: int
    decisions: list[Decision]
    groups: dict[str, dict[str, int]]
    dense: dict[str, dict[str, int]]


@dataclass
class Calibration:
    model: DecisionModel
    tune: Part
    holdout: Part


def is_held_apart(bank_text: str, share: float) -> bool:
    digest = hashlib.sha256(bank_text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def _label(query: dict[str, Any], entry_id: str) -> int | None:
    own = entry_id == query["bank_id"]
    if query.get("expect") == "hit":
        return int(own)
    if query.get("expect") == "either" and own:
        return None
    return 0


def _rescore(
    decision: Decision, model: DecisionModel, hit_at: float, suggest_at: float
) -> Decision:
    if decision.outcome == "hit" and not decision.candidates[0].features:
        return decision  # the exact tier (same text, or an alias): no model involved
    checks = [
        replace(c, probability=model.probability(c.features), passed=True)
        if c.features
        else replace(c, passed=False)
        for c in decision.candidates
    ]
    if not checks:
        return decision
    return decide(checks, hit_at=hit_at, suggest_at=suggest_at)


def _fit(rows: list[tuple[tuple[float, ...], int]], embedder: str) -> DecisionModel:
    from sklearn.linear_model import LogisticRegression

    x = np.asarray([f for f, _ in rows], dtype=np.float64)
    y = np.asarray([label for _, label in rows])
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / scale, y)
    return DecisionModel(
        embedder=embedder,
        weights=tuple(float(w) for w in fitted.coef_[0]),
        bias=float(fitted.intercept_[0]),
        mean=tuple(float(m) for m in mean),
        scale=tuple(float(s) for s in scale),
        hit_at=0.5,
        suggest_at=0.5,
        notes={},
    )


def calibrate(
    embedder: Embedder,
    bank: list[tuple[str, str]],
    queries: list[dict[str, Any]],
    dense: list[tuple[str, str]],
    *,
    holdout: float,
    max_wrong: float,
    find: float,
    sources: list[str],
) -> Calibration:
    """See the module docstring. `queries` carry "bank_id", "expect", "kind" (and "lang")."""
    from solver.cli.match import headline, score

    text_of = dict(bank)
    apart = [is_held_apart(text_of[q["bank_id"]], holdout) for q in queries]
    plain = SemanticCache(embedder, model=None)
    plain.add_many(bank, strict=True)
    decisions = plain.lookup_many([q["text"] for q in queries])
    dense_cache = SemanticCache(embedder, model=None)
    dense_cache.add_many(dense, strict=True)
    rewordings = [i for i, q in enumerate(queries) if q.get("expect") != "miss"]
    dense_decisions = dict(
        zip(
            rewordings,
            dense_cache.lookup_many([queries[i]["text"] for i in rewordings]),
            strict=True,
        )
    )

    rows: list[tuple[tuple[float, ...], int]] = []
    for i, (query, decision) in enumerate(zip(queries, decisions, strict=True)):
        if apart[i]:
            continue
        seen = set()
        for source in (decision, dense_decisions.get(i)):
            if source is None:
                continue
            for check in source.candidates:
                label = _label(query, check.entry_id)
                if not check.features or label is None or (check.entry_id, label) in seen:
                    continue
                seen.add((check.entry_id, label))
                rows.append((check.features, label))
    model = _fit(rows, embedder.name)

    def part(keep: bool, hit_at: float, suggest_at: float) -> Part:
        idx = [i for i in range(len(queries)) if apart[i] == keep]
        replayed = [_rescore(decisions[i], model, hit_at, suggest_at) for i in idx]
        dense_idx = [i for i in idx if i in dense_decisions]
        dense_replayed = [
            _rescore(dense_decisions[i], model, hit_at, suggest_at) for i in dense_idx
        ]
        return Part(
            problems=len({queries[i]["bank_id"] for i in idx}),
            queries=len(idx),
            decisions=replayed,
            groups=score([queries[i] for i in idx], replayed, bank),
            dense=score([queries[i] for i in dense_idx], dense_replayed, bank),
        )

    def figures(p: Part) -> dict[str, float]:
        h = headline(p.groups, p.dense)

        def rate(name: str) -> float:
            count, n = h.get(name, (0, 0))
            return count / n if n else 0.0

        return {
            "wrong": rate("wrong hits (questions that must miss)"),
            "either_wrong": rate("same answer in other words (either): wrong"),
            "dense": rate("dense bank: rewordings matched to another problem"),
            "found": rate("rewordings and translations served or suggested right"),
        }

    # The lowest hit threshold whose wrong hits stay under the bound on the tuning part.
    hit_at = 0.999
    for candidate in np.round(np.arange(0.50, 0.995, 0.01), 3):
        f = figures(part(False, float(candidate), float(candidate)))
        if max(f["wrong"], f["dense"], f["either_wrong"]) <= max_wrong:
            hit_at = float(candidate)
            break
    suggest_at = 0.02
    for candidate in np.round(np.arange(hit_at, 0.019, -0.01), 3):
        if figures(part(False, hit_at, float(candidate)))["found"] >= find:
            suggest_at = float(candidate)
            break
    model = replace(
        model,
        hit_at=hit_at,
        suggest_at=min(suggest_at, hit_at),
        notes={
            "fitted_on": sources,
            "held_apart_share": holdout,
            "max_wrong_on_tune": max_wrong,
            "find_on_tune": find,
            "pairs": len(rows),
            "positives": int(sum(label for _, label in rows)),
            "features": list(FEATURES),
        },
    )
    return Calibration(
        model=model,
        tune=part(False, model.hit_at, model.suggest_at),
        holdout=part(True, model.hit_at, model.suggest_at),
    )


__all__ = ["Calibration", "CandidateCheck", "calibrate", "is_held_apart"]
