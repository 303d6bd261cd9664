"""The browsable API's pages within the portal's Content-Security-Policy."""

from __future__ import annotations

from rest_framework.renderers import BrowsableAPIRenderer


class BrowsableAPI(BrowsableAPIRenderer):
    """Django REST framework's HTML pages. Their scripts (jQuery, Bootstrap 3)
    set inline styles as they draw, which the portal's policy blocks: these
    pages alone, as HTML, also allow inline styles (never inline scripts)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            response._csp_update = {"style-src": ["'unsafe-inline'"]}
        return super().render(data, accepted_media_type, renderer_context)
