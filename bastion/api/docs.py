"""/docs (Swagger UI) and /redoc: the OpenAPI document as pages, every file they load served by Bastion.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from Google): with no
internet they are blank. The files come from the fastapi-standalone-docs package instead (MIT; it ships
Swagger UI's and ReDoc's dist with their licences); Bastion serves them itself (not through that
package's patching of FastAPI). The /docs page has no inline script, so its Content-Security-Policy
allows this origin only.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from starlette.responses import FileResponse, HTMLResponse, Response

_PACKAGE = "fastapi_standalone_docs"
_FILES = Path(str(resources.files(_PACKAGE) / "static"))
_FAVICON = Path(str(resources.files("bastion") / "dashboard" / "static" / "favicon.svg"))
_VERSION = metadata.version("fastapi-standalone-docs")  # in the files' URLs: a new one is fetched anew

ASSETS = {  # URL path -> (file, media type)
    "/docs/swagger-ui-bundle.js": (_FILES / "swagger" / "swagger-ui-bundle.js", "text/javascript"),
    "/docs/swagger-ui.css": (_FILES / "swagger" / "swagger-ui.css", "text/css"),
    "/docs/favicon.svg": (_FAVICON, "image/svg+xml"),
    "/redoc/redoc.standalone.js": (_FILES / "redoc" / "redoc.standalone.js", "text/javascript"),
    "/redoc/logo-mini.svg": (_FILES / "redoc" / "logo-mini.svg", "image/svg+xml"),  # ReDoc's own link
}
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# ReDoc styles its page with <style> elements it writes, and parses the document in a blob: worker.
REDOC_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bastion API</title>
<link rel="icon" type="image/svg+xml" href="/docs/favicon.svg?v={_VERSION}">
<link rel="stylesheet" href="/docs/swagger-ui.css?v={_VERSION}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js?v={_VERSION}"></script>
<script src="/docs/init.js?v={_VERSION}"></script>
</body>
</html>
"""
_PAGE_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "same-origin"}
_ASSET_HEADERS = {"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"}


def install_docs(web: FastAPI) -> None:
    """The pages and their files on `web` (made with docs_url=None, redoc_url=None)."""

    @web.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(_PAGE, headers={"content-security-policy": DOCS_CSP, **_PAGE_HEADERS})

    @web.api_route("/docs/init.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers=_ASSET_HEADERS)

    @web.api_route("/redoc", methods=["GET", "HEAD"], include_in_schema=False)
    async def redoc() -> Response:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title="Bastion API",
            redoc_js_url=f"/redoc/redoc.standalone.js?v={_VERSION}",
            redoc_favicon_url=f"/docs/favicon.svg?v={_VERSION}",
            with_google_fonts=False,
        )
        page.headers.update({"content-security-policy": REDOC_CSP, **_PAGE_HEADERS})
        return page

    for path, (file, media_type) in ASSETS.items():
        web.add_api_route(path, _asset(file, media_type), methods=["GET", "HEAD"], include_in_schema=False)


def _asset(file: Path, media_type: str) -> object:
    async def asset() -> Response:
        return FileResponse(file, media_type=media_type, headers=_ASSET_HEADERS)

    return asset
