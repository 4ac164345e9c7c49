"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served with their assets from this service, not from a CDN: they
work without internet, load no third-party script, and carry a Content-Security-Policy like the model page's.

The assets are the files the ``fastapi-offline`` package ships (Swagger UI's bundle and CSS, ReDoc's standalone
bundle); only its static folder is used. Every text that reaches the HTML is escaped (the title comes from the
manifest), and the one inline script is allowed by its hash. URLs are relative to the root path, so the pages
work behind a prefix.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from irisserve.ui import HTML, hash_source

STATIC_PREFIX = "/docs/static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{static}/swagger-ui.css"><link rel="icon" href="{static}/favicon.png"></head>
<body><div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script>{script}</script>
</body></html>"""
SWAGGER_SCRIPT = (
    "SwaggerUIBundle({{url: {openapi}, dom_id: '#swagger-ui', layout: 'BaseLayout', deepLinking: true, "
    "showExtensions: true, showCommonExtensions: true, "
    "presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}});"
)
REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="{static}/favicon.png"></head>
<body><div id="redoc"></div>
<script src="{static}/redoc.standalone.js"></script>
<script>{script}</script>
</body></html>"""
REDOC_SCRIPT = "Redoc.init({openapi}, {{}}, document.getElementById('redoc'));"


# ReDoc's sidebar loads Redocly's logo from their CDN (and hides it when it fails to load): pointed at an empty
# data: URL instead, so the page makes no third-party request and breaks no CSP rule.
THIRD_PARTY = {"redoc.standalone.js": (b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"data:,")}


@lru_cache(maxsize=16)
def asset(name: str) -> bytes:
    content = (files("fastapi_offline") / "static" / name).read_bytes()
    if name in THIRD_PARTY:
        content = content.replace(*THIRD_PARTY[name])
    return content


@lru_cache(maxsize=64)
def render(template: str, script_template: str, *, title: str, root_path: str, openapi_url: str) -> tuple[bytes, str]:
    """The page and its Content-Security-Policy. The script's one value is JSON with "<" escaped, so nothing in it
    can close the element; the title is HTML-escaped."""
    openapi = json.dumps(root_path + openapi_url).replace("<", "\\u003c")
    script = script_template.format(openapi=openapi)
    page = template.format(title=html.escape(title), static=html.escape(root_path + STATIC_PREFIX), script=script)
    policy = (
        f"default-src 'none'; script-src 'self' {hash_source(script)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page.encode(), policy


def build_docs_router(title: str, openapi_url: str) -> APIRouter:
    """The two pages and their assets (not in the OpenAPI document, as FastAPI's own /docs is not)."""
    router = APIRouter(include_in_schema=False)

    def page(template: str, script_template: str, request: Request) -> Response:
        body, policy = render(template, script_template, title=title, root_path=request.scope.get("root_path", ""), openapi_url=openapi_url)
        headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
        return Response(body, media_type=HTML, headers=headers)

    @router.get("/docs")
    async def read_swagger_ui(request: Request) -> Response:
        return page(SWAGGER, SWAGGER_SCRIPT, request)

    @router.get("/redoc")
    async def read_redoc(request: Request) -> Response:
        return page(REDOC, REDOC_SCRIPT, request)

    @router.get(STATIC_PREFIX + "/{name}")
    async def read_docs_asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"No such asset; the docs pages use {', '.join(sorted(ASSETS))}.")
        return Response(asset(name), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})

    return router
