"""Response headers every page and API answer carries.

Owns: `SecurityHeadersMiddleware`, which makes every error under /api/ JSON (a URL no route matches, such
as /api/questions/abc, or a body Django itself refused, would otherwise be an HTML page) and adds the Content-Security-Policy (settings.SUANJING_CSP; the
pages have no inline script, inline event handler or style attribute; tests/test_security.py checks the
templates and, in a real browser, that the pages report no violation). X-Content-Type-Options, Referrer-Policy and HSTS come
from Django's SecurityMiddleware, X-Frame-Options from its clickjacking middleware.
"""

from __future__ import annotations

from django.conf import settings

from tutor.errors import json_error

API_ERRORS = {
    400: "bad request",
    404: "no such API endpoint or object (ids are whole numbers)",
    405: "method not allowed",
    413: "the request body is too large",
    500: "server error",
}


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            status = response.status_code
            json = json_error(status, API_ERRORS.get(status, "request refused"))
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    json[header] = response[header]
            response = json
        if settings.SUANJING_CSP and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.SUANJING_CSP
        return response
