"""The model page both front doors serve: one self-contained HTML file (``page.html``: inline CSS and plain
JavaScript, no external URL, only relative ones), so it works offline and behind a path prefix.

The server fills in a small JSON config (which door serves it, whether an API key is needed, how often the live
panel refreshes); everything about the model the page fetches itself, with the key when one is set, so the page
holds nothing secret and needs no key. Its Content-Security-Policy allows exactly its own inline script and
style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

PAGE_FILE = Path(__file__).with_name("page.html")
CONFIG_MARK = "{{IRISSERVE_CONFIG}}"
REFRESH_SECONDS = 3.0
HTML = "text/html; charset=utf-8"

Door = Literal["web", "function"]

_INLINE = {"script": re.compile(r"<script>(.*?)</script>", re.S), "style": re.compile(r"<style>(.*?)</style>", re.S)}


@dataclass(frozen=True)
class Page:
    """The rendered page and the headers to send with it."""

    body: bytes
    headers: dict[str, str]


def hash_source(code: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"


def content_security_policy(html: str) -> str:
    """Only this page's own inline script and style run, fetches go to its own origin, nothing else loads."""
    scripts = " ".join(hash_source(code) for code in _INLINE["script"].findall(html))
    styles = " ".join(hash_source(code) for code in _INLINE["style"].findall(html))
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@lru_cache(maxsize=8)
def render_page(*, door: Door, auth: bool, refresh_seconds: float = REFRESH_SECONDS) -> Page:
    """The page for ``door`` ("web": the app's routes, relative; "function": its one URL)."""
    config = {"door": door, "auth": auth, "refresh_seconds": refresh_seconds}
    # "<" escaped so nothing in the JSON can close the <script> element it sits in.
    blob = json.dumps(config, separators=(",", ":")).replace("<", "\\u003c")
    html = PAGE_FILE.read_text(encoding="utf-8").replace(CONFIG_MARK, blob)
    headers = {
        "Content-Type": HTML,
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Page(html.encode("utf-8"), headers)
