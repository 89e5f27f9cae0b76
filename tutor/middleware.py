"""Response headers every page and API answer carries.

Owns: `SecurityHeadersMiddleware`, which adds the Content-Security-Policy (settings.SUANJING_CSP; the
pages have no inline script, inline event handler or style attribute; tests/test_security.py checks the
templates and, in a real browser, that the pages report no violation). X-Content-Type-Options, Referrer-Policy and HSTS come
from Django's SecurityMiddleware, X-Frame-Options from its clickjacking middleware.
"""

from __future__ import annotations

from django.conf import settings


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.SUANJING_CSP and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.SUANJING_CSP
        return response
