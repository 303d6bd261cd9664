"""Response headers for pages that may show patient data."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers, patch_cache_control


class NoStoreMiddleware:
    """``Cache-Control: no-store`` (and private, no-cache) on every answer of the
    portal's views: pages, live fragments, exports, manifests and downloads may
    show patient data, and neither a shared proxy nor the browser's cache may
    keep them. Static files never get here (WhiteNoise answers them first, with
    their own long cache headers)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        add_never_cache_headers(response)
        patch_cache_control(response, private=True)
        return response
