//! The admin web page: one static HTML document embedded in the binary (no CDN, no other
//! origin), served with a Content-Security-Policy that allows exactly its own inline script and
//! style (by hash) and requests to this origin.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::request::Req;
use super::response::Reply;
use crate::error::ApiError;

/// The page's HTML, embedded from `admin.html`; its inline script and style are the only
/// ones the policy allows.
pub const PAGE: &str = include_str!("admin.html");

fn inline_hash(open: &str, close: &str) -> String {
    let start = PAGE.find(open).map(|i| i + open.len()).unwrap_or(0);
    let end = PAGE[start..].find(close).map_or(start, |i| start + i);
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(&PAGE.as_bytes()[start..end]))
    )
}

static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        inline_hash("<script>", "</script>"),
        inline_hash("<style>", "</style>"),
    )
});

/// `GET /admin/`.
pub(super) fn serve(_req: &Req) -> Result<Reply, ApiError> {
    Ok(reply())
}

fn reply() -> Reply {
    Reply::html(PAGE)
        .with_header_value("content-security-policy", &POLICY)
        .with_header("x-frame-options", "DENY")
        .with_header("referrer-policy", "no-referrer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for forbidden in ["http://", "https://", "//cdn", "src=\"", "<link"] {
            assert!(!PAGE.contains(forbidden), "the page references {forbidden}");
        }
    }

    #[test]
    fn the_policy_names_the_inline_script_and_style_by_hash() {
        assert!(POLICY.contains("script-src 'sha256-"));
        assert!(POLICY.contains("style-src 'sha256-"));
        assert!(!POLICY.contains("unsafe-inline"));
        assert_ne!(
            inline_hash("<script>", "</script>"),
            inline_hash("<style>", "</style>")
        );
    }
}
