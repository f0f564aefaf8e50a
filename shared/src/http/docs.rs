//! The documentation routes: the OpenAPI document, Swagger UI and ReDoc, every asset embedded
//! (nothing is fetched from a CDN, a font service or anywhere else).
//!
//! The UI assets are a few megabytes. They are linked only into binaries that call
//! [`enable_docs_ui`] — the `docs` Lambda function and the local server — so the other
//! functions stay small; without it the UI routes answer `404` and the document is still served.

use std::sync::{Arc, LazyLock, OnceLock};

use http::StatusCode;

use super::openapi::DOCUMENT_JSON;
use super::request::Req;
use super::response::Reply;
use crate::error::ApiError;

/// A file's bytes and content type.
type Asset = (Vec<u8>, String);

/// Where the UI assets come from once enabled.
struct Ui {
    swagger: fn(&str) -> Option<Asset>,
    redoc_js: fn() -> &'static [u8],
}

static UI: OnceLock<Ui> = OnceLock::new();

/// ReDoc's standalone bundle, pinned (see `shared/assets/redoc/update.sh`).
static REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

/// The one address the bundle reaches for on its own: the "API docs by Redocly" badge's logo.
const REDOC_LOGO: &[u8] = b"https://cdn.redoc.ly/redoc/logo-mini.svg";

/// The bundle with that logo replaced by an empty inline image, so the page loads nothing from
/// elsewhere (the Content-Security-Policy would block it anyway; this keeps the browser from
/// even trying).
static REDOC_JS_OFFLINE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let blank: &[u8] = b"data:image/gif;base64,R0lGODlhAQABAAAAACw=";
    let mut out = Vec::with_capacity(REDOC_JS.len());
    let mut rest = REDOC_JS;
    while let Some(at) = rest.windows(REDOC_LOGO.len()).position(|w| w == REDOC_LOGO) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(blank);
        rest = &rest[at + REDOC_LOGO.len()..];
    }
    out.extend_from_slice(rest);
    out
});

fn redoc_js() -> &'static [u8] {
    &REDOC_JS_OFFLINE
}

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        utoipa_swagger_ui::Config::from("/api/schema/")
            // The default validator badge calls validator.swagger.io: not offline.
            .validator_url("none")
            .display_request_duration(true),
    )
});

fn swagger_file(name: &str) -> Option<Asset> {
    let file = utoipa_swagger_ui::serve(name, Arc::clone(&SWAGGER_CONFIG)).ok()??;
    if file.gzpipped {
        // Served as-is would need Content-Encoding negotiation; the vendored files are plain.
        return None;
    }
    Some((file.bytes.into_owned(), file.content_type))
}

/// Links the UI assets into this binary and serves them.
pub fn enable_docs_ui() {
    let _ = UI.set(Ui {
        swagger: swagger_file,
        redoc_js,
    });
}

const REDOC_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LightTech API — ReDoc</title>
</head>
<body>
<redoc spec-url="/api/schema/" hide-download-button></redoc>
<script src="/api/redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

/// Pages may use this origin only: no request leaves for a CDN, a font service or a logo.
const UI_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     script-src 'self'; worker-src 'self' blob:; font-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

fn ui_reply(body: Vec<u8>, content_type: &str) -> Reply {
    Reply {
        status: StatusCode::OK,
        body: Some((body, "application/octet-stream")),
        headers: Vec::new(),
    }
    .with_content_type(content_type)
    .with_header_value("content-security-policy", UI_POLICY)
    .with_header("cache-control", "public, max-age=3600")
}

/// Relative asset links need the slash: `/api/docs` → `/api/docs/`.
fn slash_redirect(req: &Req) -> Option<Reply> {
    (!req.path.ends_with('/')).then(|| {
        Reply::empty(StatusCode::PERMANENT_REDIRECT)
            .with_header_value("location", &format!("{}/", req.path))
    })
}

pub(super) fn schema(_req: &Req) -> Result<Reply, ApiError> {
    Ok(
        Reply::raw_json(StatusCode::OK, bytes::Bytes::from_static(&DOCUMENT_JSON))
            .with_header("cache-control", "no-cache"),
    )
}

pub(super) fn swagger(req: &Req) -> Result<Reply, ApiError> {
    if let Some(redirect) = slash_redirect(req) {
        return Ok(redirect);
    }
    let ui = UI.get().ok_or(ApiError::NotFound)?;
    let (body, content_type) = (ui.swagger)("index.html").ok_or(ApiError::NotFound)?;
    Ok(ui_reply(body, &content_type))
}

pub(super) fn swagger_asset(req: &Req) -> Result<Reply, ApiError> {
    let ui = UI.get().ok_or(ApiError::NotFound)?;
    let name = req.param("file").unwrap_or_default();
    if name.contains("..") || name.contains('/') {
        return Err(ApiError::NotFound);
    }
    let (body, content_type) = (ui.swagger)(name).ok_or(ApiError::NotFound)?;
    Ok(ui_reply(body, &content_type))
}

pub(super) fn redoc(req: &Req) -> Result<Reply, ApiError> {
    if let Some(redirect) = slash_redirect(req) {
        return Ok(redirect);
    }
    UI.get().ok_or(ApiError::NotFound)?;
    Ok(ui_reply(
        REDOC_PAGE.as_bytes().to_vec(),
        "text/html; charset=utf-8",
    ))
}

pub(super) fn redoc_bundle(_req: &Req) -> Result<Reply, ApiError> {
    let ui = UI.get().ok_or(ApiError::NotFound)?;
    Ok(ui_reply(
        (ui.redoc_js)().to_vec(),
        "text/javascript; charset=utf-8",
    ))
}
