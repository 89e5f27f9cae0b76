"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json (docs/api.md explains it).

Written by hand: the API is a handful of endpoints; a test checks that every path here is routed and that
responses of the real endpoints carry the keys this schema requires.
"""

from __future__ import annotations

from tutor.services.steps import MAX_CHECK_CHARS
from tutor.services.text import MAX_QUESTION_CHARS

_error = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}

_answer = {
    "type": "object",
    "required": ["text", "final", "reasoning", "solution_id", "status"],
    "properties": {
        "text": {"type": "string", "description": "the visible answer (LaTeX allowed)"},
        "final": {"type": ["string", "null"], "description": "the extracted final answer"},
        "reasoning": {
            "type": "string",
            "description": "the chain of thought ('' for teachers' solutions)",
        },
        "solution_id": {"type": ["integer", "null"], "description": "null for the answer key"},
        "status": {
            "enum": ["approved", "verified", "unverified", "answer_key"],
            "description": "approved: by a teacher; verified: matches the reference answer; "
            "unverified: not yet checked; answer_key: the problem's reference answer alone",
        },
    },
}

_question = {
    "type": "object",
    "required": ["id", "status", "question", "created"],
    "properties": {
        "id": {"type": "integer"},
        "status": {
            "enum": [
                "hit",
                "suggest",
                "generating",
                "answered",
                "failed",
                "refused",
                "waiting_for_teacher",
            ]
        },
        "question": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "answer": _answer,
        "explanation": {
            "type": "string",
            "description": "one plain sentence for the student: why the bank answer was chosen",
        },
        "suggestions": {
            "type": "array",
            "description": "status suggest: 'Is this your question?' (up to 3, best first); answer "
            "with POST `choose`",
            "items": {
                "type": "object",
                "required": ["problem_id", "text", "score"],
                "properties": {
                    "problem_id": {"type": "integer"},
                    "text": {"type": "string"},
                    "score": {"type": "number"},
                },
            },
        },
        "choose": {"type": "string", "description": "status suggest: the URL to answer it"},
        "earlier": {
            "type": "integer",
            "description": "status failed: the earlier failed try at the same question shown instead "
            "of a rerun (POST /questions/{id}/retry in the site tries again)",
        },
        "match": {
            "type": "object",
            "description": "present on a hit: the banked problem and why it matched",
            "required": ["problem_id", "score", "reasons"],
            "properties": {
                "problem_id": {"type": "integer"},
                "score": {"type": ["number", "null"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
            },
        },
        "problem_id": {
            "type": "integer",
            "description": "the bank problem a live generation answered",
        },
        "stream": {"type": "string", "description": "while generating: the server-sent-events URL"},
        "error": {"type": "string"},
        "refusal": {"enum": ["busy", "no_model"]},
        "feedback": {"enum": ["not_my_question", "ask_teacher"]},
    },
}

_problem = {
    "type": "object",
    "required": ["id", "text", "lang", "topic", "difficulty", "reference_answer", "best_status"],
    "properties": {
        "id": {"type": "integer"},
        "text": {"type": "string"},
        "lang": {"enum": ["zh", "en"]},
        "topic": {"type": "string"},
        "difficulty": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
        "reference_answer": {"type": "string"},
        "best_status": {
            "type": ["string", "null"],
            "enum": ["approved", "verified", "unverified", None],
        },
    },
}


_steps = {
    "type": "object",
    "required": ["steps", "shown", "total", "whole", "checks", "last_check", "last_right"],
    "properties": {
        "steps": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the steps revealed so far (LaTeX allowed), first to last",
        },
        "shown": {"type": "integer", "minimum": 0},
        "total": {"type": "integer", "minimum": 0, "description": "how many steps the answer has"},
        "whole": {"type": "boolean", "description": "the student asked for the whole solution"},
        "checks": {"type": "integer", "minimum": 0, "description": "answers checked so far"},
        "last_check": {"type": ["string", "null"], "description": "the last answer checked"},
        "last_right": {"type": ["boolean", "null"], "description": "null: none checked yet"},
        "right": {"type": "boolean", "description": "POST check only: the answer is right"},
    },
}

# 429: a stored refused question (refusal busy), or an error (refusal one_at_a_time, nothing stored).
_refused = {
    "anyOf": [
        _question,
        {
            "type": "object",
            "required": ["error", "refusal"],
            "properties": {"error": {"type": "string"}, "refusal": {"const": "one_at_a_time"}},
        },
    ]
}


def _body(name: str, schema: dict) -> dict:
    """A required JSON request body: an object whose one required property is `name`."""
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": [name], "properties": {name: schema}}
            }
        },
    }


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_errors = {
    "401": _json(_error, "no session and no valid bearer token"),
    "404": _json(_error, "no such question, or not yours"),
}
MAX_ID = 2**63 - 1
_qid = [
    {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }
]
# What `tutor.services.text.validate_question` accepts: at most MAX_QUESTION_CHARS characters (the raw
# string here, as the API view checks it), something besides spaces, and no control characters but tab and
# newlines (nor U+FFFD; a lone surrogate, which no schema regex can name, is refused too).
_CTRL = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f\\ufffd"
QUESTION_PATTERN = f"^[^{_CTRL}]*[^{_CTRL}\\s][^{_CTRL}]*$"
NO_NUL = "^[^\\u0000]*$"  # Django's form fields refuse the NUL character
_question_text = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_QUESTION_CHARS,
    "pattern": QUESTION_PATTERN,
    "description": f"at most {MAX_QUESTION_CHARS} characters, not only spaces, "
    "no control characters but tab and newline",
}

SCHEMA: dict = {
    "openapi": "3.1.0",
    "info": {
        "title": "Suanjing tutor API",
        "version": "1",
        "description": "Ask questions, follow live generation, browse the problem bank. See docs/api.md.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "manage.py api_token USERNAME",
            },
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
        },
        "schemas": {"Question": _question, "Problem": _problem, "Error": _error},
    },
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/api/ask": {
            "post": {
                "summary": "Ask a question: a banked answer at once, or a live generation",
                "requestBody": _body("question", _question_text),
                "responses": {
                    "200": _json(
                        _question, "status hit: the answer is in `answer`, the match in `match`"
                    ),
                    "202": _json(
                        _question, "status generating: follow `stream` or poll /api/questions/{id}"
                    ),
                    "400": _json(
                        _error,
                        f"not JSON, no question, empty, over {MAX_QUESTION_CHARS} characters, "
                        "control characters",
                    ),
                    "403": _json(_error, "session request without CSRF token"),
                    "429": _json(
                        _refused,
                        "status refused, refusal busy: the live queue is full; see Retry-After. "
                        "Or an error with refusal one_at_a_time: this user already waits for a live "
                        "answer (nothing stored)",
                    ),
                    "503": _json(
                        _question, "status refused, refusal no_model: no model is prepared"
                    ),
                    **{k: v for k, v in _errors.items() if k == "401"},
                },
            }
        },
        "/api/questions/{id}": {
            "get": {
                "summary": "A question: status moves from generating to answered or failed",
                "parameters": _qid,
                "responses": {"200": _json(_question, "the question"), **_errors},
            }
        },
        "/api/questions/{id}/stream": {
            "get": {
                "summary": "Server-sent events of a live generation",
                "description": (
                    'Each piece is `id: <n>` and `data: <JSON>`: {"type": "reasoning"|"answer", "text": '
                    '"..."} as it is generated, numbered from 1; then one `data:` {"type": "done", '
                    "...the question...} without an id. Any web process serves any stream. A client that "
                    "reconnects sends the header `Last-Event-ID: <n>` (EventSource does; not listed as a parameter, "
                    "since any header may come along) or `?after=<n>` and gets the "
                    "pieces after n, none twice. A question that is not generating gets the done event at "
                    "once. Lines starting with ':' are keep-alives; `retry:` is the reconnect delay in ms."
                ),
                "parameters": [
                    *_qid,
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 999999999},
                        "description": "send the pieces after this one (the later of this and Last-Event-ID)",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {}},
                    },
                    "400": _json(_error, "`after` is not a whole number from 0 to 999999999"),
                    **_errors,
                },
            }
        },
        "/api/questions/{id}/feedback": {
            "post": {
                "summary": "The student who asked says the answer does not answer the question",
                "parameters": _qid,
                "responses": {
                    "200": _json(_question, "feedback recorded"),
                    "403": _json(_error, "not the asker"),
                    **_errors,
                },
            }
        },
        "/api/questions/{id}/choose": {
            "post": {
                "summary": "Answer 'Is this your question?': a suggested problem, or null for the tutor",
                "parameters": _qid,
                "requestBody": _body(
                    "problem_id",
                    {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": MAX_ID,
                    },
                ),
                "responses": {
                    "200": _json(_question, "yes: that problem's answer (a pending alias is kept)"),
                    "202": _json(_question, "no: a live generation, as for a miss"),
                    "429": _json(
                        _refused, "no: the live queue is full, or a live answer of yours runs"
                    ),
                    "503": _json(_question, "no: status refused, refusal no_model"),
                    "400": _json(_error, "not a suggested problem"),
                    "403": _json(_error, "not the asker"),
                    "409": _json(_error, "the question is not waiting for a choice"),
                    **_errors,
                },
            }
        },
        "/api/questions/{id}/stop": {
            "post": {
                "summary": "Stop a live answer (the asker)",
                "parameters": _qid,
                "responses": {
                    "200": _json(_question, "stopped: status failed"),
                    "403": _json(_error, "not the asker"),
                    **_errors,
                },
            }
        },
        "/api/questions/{id}/steps": {
            "get": {
                "summary": "Step by step on a banked answer: the steps the asker has revealed",
                "parameters": _qid,
                "responses": {
                    "200": _json(_steps, "where the student is"),
                    "403": _json(_error, "not the asker"),
                    "409": _json(_error, "the question has no banked answer"),
                    **_errors,
                },
            },
            "post": {
                "summary": "Reveal a hint, the next step, or the whole solution (the asker)",
                "parameters": _qid,
                "requestBody": _body("action", {"enum": ["hint", "next", "whole"]}),
                "responses": {
                    "200": _json(_steps, "revealed; `whole` once every step is shown"),
                    "400": _json(_error, "no action, or not hint, next or whole"),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    "409": _json(_error, "the question has no banked answer"),
                    **_errors,
                },
            },
        },
        "/api/questions/{id}/check": {
            "post": {
                "summary": "Check my answer: right or not, without the solution (the asker)",
                "parameters": _qid,
                "requestBody": _body(
                    "answer",
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_CHECK_CHARS,
                        "pattern": QUESTION_PATTERN,
                        "description": "the student's final answer (23, 二十三, "
                        "1/2 = 0.5 are compared as the bank compares answers)",
                    },
                ),
                "responses": {
                    "200": _json(_steps, "`right` says whether the answer is right"),
                    "400": _json(_error, f"no answer, empty, over {MAX_CHECK_CHARS} characters"),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    "409": _json(_error, "the question has no banked answer or no final answer"),
                    **_errors,
                },
            }
        },
        "/api/problems": {
            "get": {
                "summary": "The problem bank, 50 per page (teachers)",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 200, "pattern": NO_NUL},
                        "description": "search (Chinese too)",
                    },
                    {
                        "name": "topic",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 64, "pattern": NO_NUL},
                    },
                    {"name": "lang", "in": "query", "schema": {"enum": ["", "zh", "en"]}},
                    {
                        "name": "difficulty",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 5},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {
                            "enum": [
                                "",
                                "none",
                                "approved",
                                "verified",
                                "unverified",
                                "rejected",
                                "flagged",
                                "failed",
                            ]
                        },
                        "description": "none: no servable answer",
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["items", "total", "page"],
                            "properties": {
                                "items": {"type": "array", "items": _problem},
                                "total": {"type": "integer"},
                                "page": {"type": "integer"},
                                "pages": {"type": "integer"},
                            },
                        },
                        "one page of problems",
                    ),
                    "400": _json(_error, "bad filter"),
                    "401": _errors["401"],
                    "403": _json(_error, "teachers only"),
                    "404": _json(_error, "page out of range"),
                },
            }
        },
    },
}
