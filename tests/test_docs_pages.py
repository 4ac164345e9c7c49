"""/docs and /redoc: served with their assets by the service, every text escaped, a CSP allowing only their own
script (in a real browser: tests/test_ui_browser.py)."""

from __future__ import annotations

import re

import httpx

from irisserve.ui import hash_source
from irisserve.web.docs import REDOC, REDOC_SCRIPT, SWAGGER, SWAGGER_SCRIPT, render
from support import RunningServer

HOSTILE = "</title><script>alert(1)</script>"


def test_a_hostile_title_and_path_are_escaped() -> None:
    for template, script in ((SWAGGER, SWAGGER_SCRIPT), (REDOC, REDOC_SCRIPT)):
        page, policy = render(template, script, title=HOSTILE, root_path="/x</script><script>alert(2)//", openapi_url="/openapi.json")
        text = page.decode()
        assert "<script>alert(1)" not in text and "&lt;/title&gt;&lt;script&gt;alert(1)" in text
        assert text.count("</script>") == 2  # the bundle's element and the inline script's: nothing else closes one
        inline = re.findall(r"<script>(.*?)</script>", text, re.S)
        assert len(inline) == 1 and hash_source(inline[0]) in policy


def test_docs_pages_and_assets_come_from_the_service(live_server: RunningServer) -> None:
    for path in ("/docs", "/redoc"):
        response = httpx.get(live_server.base_url + path)
        assert response.status_code == 200 and "cdn" not in response.text.lower()
        assert "script-src 'self' 'sha256-" in response.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="([^"]+)"', response.text):
            assert asset.startswith("/docs/static/")
            fetched = httpx.get(live_server.base_url + asset)
            assert fetched.status_code == 200 and len(fetched.content) > 1000
    missing = httpx.get(live_server.base_url + "/docs/static/other.js")
    assert missing.status_code == 404 and "swagger-ui-bundle.js" in missing.json()["detail"]
