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
        "text": {
            "type": ["string", "null"],
            "description": "the visible answer (LaTeX allowed); null while `withheld`",
        },
        "final": {
            "type": ["string", "null"],
            "description": "the extracted final answer (null: none, or `withheld`)",
        },
        "reasoning": {
            "type": ["string", "null"],
            "description": "the chain of thought ('' for teachers' solutions); null while `withheld`",
        },
        "solution_id": {"type": ["integer", "null"], "description": "null for the answer key"},
        "status": {
            "enum": ["approved", "verified", "unverified", "answer_key"],
            "description": "approved: by a teacher; verified: matches the reference answer; "
            "unverified: not yet checked; answer_key: the problem's reference answer alone",
        },
        "withheld": {
            "type": "boolean",
            "description": "true: shown step by step and the whole solution not asked for yet; "
            "the steps shown so far are in the question's `steps`",
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

_follow_up = {
    "type": "object",
    "description": "a follow-up question on an answer, answered by a live generation (never a "
    "problem of the bank)",
    "required": ["id", "question_id", "status", "question", "created"],
    "properties": {
        "id": {"type": "integer"},
        "question_id": {"type": "integer", "description": "the question whose answer it is about"},
        "status": {"enum": ["generating", "answered", "failed"]},
        "question": {"type": "string", "description": "the student's follow-up question"},
        "created": {"type": "string", "format": "date-time"},
        "reply": {
            "type": "object",
            "description": "status answered: the model's reply (nobody has checked it)",
            "required": ["text", "reasoning", "cut_short"],
            "properties": {
                "text": {"type": "string", "description": "the reply (LaTeX allowed)"},
                "reasoning": {"type": "string", "description": "the chain of thought, if any"},
                "cut_short": {"type": "boolean", "description": "the length limit ended it"},
            },
        },
        "stream": {"type": "string", "description": "while generating: the server-sent-events URL"},
        "error": {"type": "string", "description": "status failed: why"},
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
        "steps": {
            **_steps,
            "description": "the asker, on a banked answer shown step by step (as its page shows it): "
            "the steps shown so far and how many there are. Until `whole`, `answer` is `withheld`; "
            "GET `reveal` opens the whole solution",
        },
        "reveal": {
            "type": "string",
            "description": "while `answer` is withheld: GET it for the whole solution (recorded)",
        },
        "follow_ups": {
            "type": "array",
            "items": _follow_up,
            "description": "the asker's follow-up questions on this problem's answers, oldest first",
        },
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


# A live generation refused before anything was stored: {"error", "refusal"} (and "status" for Refused).
_refusal = {
    "type": "object",
    "required": ["error", "refusal"],
    "properties": {
        "error": {"type": "string"},
        "refusal": {"enum": ["busy", "rate", "one_at_a_time", "no_model", "db_busy"]},
        "status": {"const": "refused"},
    },
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
_follow_up_errors = {
    "401": _errors["401"],
    "404": _json(_error, "no such follow-up question, or not yours"),
}
_after = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": 999999999},
    "description": "send the pieces after this one (the later of this and Last-Event-ID)",
}
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
        "schemas": {
            "Question": _question,
            "FollowUp": _follow_up,
            "Problem": _problem,
            "Error": _error,
        },
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
                "description": "As the question's page shows it. To the student who asked, a banked "
                "answer of several steps comes step by step: `steps` holds the steps shown so far "
                "(POST /api/questions/{id}/steps shows more) and `answer` is `withheld` (no text, "
                "final answer or reasoning) until the whole solution was asked for, here with "
                "`?reveal=solution` (recorded as the page's Whole solution button is). Teachers get "
                "every answer whole.",
                "parameters": [
                    *_qid,
                    {
                        "name": "reveal",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["solution"]},
                        "description": "the asker opens the whole solution (recorded)",
                    },
                ],
                "responses": {
                    "200": _json(_question, "the question"),
                    "400": _json(_error, "`reveal` is not `solution`"),
                    **_errors,
                },
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
                "parameters": [*_qid, _after],
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
        "/api/questions/{id}/retry": {
            "post": {
                "summary": "Try again (a failed live answer) or another answer (a finished one)",
                "description": "A new live generation with a new seed, under the limits of an ask. "
                "Its final answer is checked as any live answer's: one a teacher rejected is never "
                "served. Should it come to nothing, the answer the student had stays.",
                "parameters": _qid,
                "responses": {
                    "202": _json(_question, "status generating: follow `stream`"),
                    "200": _json(_question, "answered at once (another student's answer joined)"),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    "409": _json(_error, "not a live answer that failed or finished"),
                    "429": _json(_refusal, "busy, or a live answer of yours is being written"),
                    "503": _json(_refusal, "no model is prepared, or the database is busy"),
                    **_errors,
                },
            }
        },
        "/api/questions/{id}/followup": {
            "post": {
                "summary": "Ask about this answer ('why is step 2 true?'): a live generation",
                "description": "The asker's question about the answer they were shown: the problem "
                "and the answer (as much of it as they have seen, when it comes step by step) go "
                "into the prompt. Queued like any live answer (the ask rate, one live answer per "
                "student, the slot limit). It never becomes a problem of the bank; it is listed "
                "under the question (`follow_ups`).",
                "parameters": _qid,
                "requestBody": _body("question", _question_text),
                "responses": {
                    "202": _json(_follow_up, "status generating: follow `stream`"),
                    "400": _json(
                        _error,
                        f"not JSON, no question, empty, over {MAX_QUESTION_CHARS} characters, "
                        "control characters",
                    ),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    "409": _json(
                        _error, "no answer shown yet (take a hint first), or it is being written"
                    ),
                    "429": _json(
                        _refusal,
                        "too many asks this minute, busy, or a live answer of yours is being written",
                    ),
                    "503": _json(_refusal, "no model is prepared, or the database is busy"),
                    **_errors,
                },
            }
        },
        "/api/followups/{id}": {
            "get": {
                "summary": "A follow-up question: status moves from generating to answered or failed",
                "parameters": _qid,
                "responses": {"200": _json(_follow_up, "the follow-up"), **_follow_up_errors},
            }
        },
        "/api/followups/{id}/stream": {
            "get": {
                "summary": "Server-sent events of a follow-up's reply",
                "description": "As /api/questions/{id}/stream: numbered reasoning and answer pieces, "
                "then one `done` event with the follow-up.",
                "parameters": [*_qid, _after],
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {}},
                    },
                    "400": _json(_error, "`after` is not a whole number from 0 to 999999999"),
                    **_follow_up_errors,
                },
            }
        },
        "/api/followups/{id}/stop": {
            "post": {
                "summary": "Stop a follow-up's reply (the asker)",
                "parameters": _qid,
                "responses": {
                    "200": _json(_follow_up, "stopped: status failed"),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    **_follow_up_errors,
                },
            }
        },
        "/api/followups/{id}/retry": {
            "post": {
                "summary": "Try again (failed, in its place) or another answer (answered: a new "
                "follow-up with the same words)",
                "parameters": _qid,
                "responses": {
                    "202": _json(_follow_up, "status generating: follow `stream`"),
                    "403": _json(_error, "not the asker, or a session request without CSRF token"),
                    "409": _json(_error, "it is being written now, or its answer is gone"),
                    "429": _json(_refusal, "busy, or a live answer of yours is being written"),
                    "503": _json(_refusal, "no model is prepared, or the database is busy"),
                    **_follow_up_errors,
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
