//! The web playground: a page and its files, embedded in the binary and served at `/` and
//! `/playground/…` under a strict Content Security Policy.
//!
//! Nothing is built or fetched at run time: the files in `playground/` are plain HTML, CSS and
//! ES modules, included as bytes. The page shows model output, which is untrusted; the policy
//! allows only this origin's scripts (no inline script, no `eval`), so even a renderer bug
//! could not run an injected script, and the page may not be framed (clickjacking).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{Body, full, json_response};

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Asset {
    /// Its name below `/playground/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("playground/", $name)),
        }
    };
}

static ASSETS: [Asset; 6] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("markdown.js", "text/javascript; charset=utf-8"),
    asset!("code.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Same-origin scripts, styles and API calls only; images also from `data:`/`blob:` URLs (the
/// previews of attached images). No plugins, no `<base>`, no form posts, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the page needs to know before it calls the API: whether it must ask for a key first
/// (so a keyed server's page opens on the key field, not on a refused request).
#[derive(serde::Serialize)]
struct PageConfig {
    api_key_required: bool,
}

/// `/playground/config.json`.
pub(crate) const CONFIG_PATH: &str = "/playground/config.json";

pub(crate) fn config_response(api_key_required: bool) -> Response<Body> {
    let mut r = json_response(StatusCode::OK, &PageConfig { api_key_required });
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Asset {
    /// The file a path names: the page at `/`, `/playground` and `/playground/`, the others
    /// at `/playground/<name>`.
    pub(crate) fn find(path: &str) -> Option<&'static Self> {
        let name = match path {
            "/" | "/playground" | "/playground/" => "index.html",
            _ => path.strip_prefix("/playground/")?,
        };
        ASSETS.iter().find(|a| a.name == name)
    }

    pub(crate) fn response(&self) -> Response<Body> {
        let mut r = Response::new(full(self.bytes));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        // Revalidated on every load, so a new binary's page never runs with an old module.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_page_and_its_files_only() {
        for page in ["/", "/playground", "/playground/", "/playground/index.html"] {
            assert_eq!(Asset::find(page).map(|a| a.name), Some("index.html"));
        }
        assert_eq!(
            Asset::find("/playground/app.js").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
        for missing in [
            "/index.html",
            "/playground/nope.js",
            "/playground/../Cargo.toml",
            "/playground//app.js",
            "/playgroundx",
        ] {
            assert_eq!(Asset::find(missing), None, "{missing}");
        }
    }

    #[test]
    fn every_response_carries_the_policy() {
        for asset in &ASSETS {
            let r = asset.response();
            assert_eq!(r.status(), StatusCode::OK);
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        }
    }

    /// The page may not lean on what the policy forbids: inline script or style, event-handler
    /// attributes, or anything from another origin.
    #[test]
    fn the_page_needs_nothing_the_policy_refuses() {
        let html = std::str::from_utf8(Asset::find("/").unwrap().bytes).unwrap();
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/playground/"), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert_eq!(handler, None, "event-handler attribute");
        for asset in &ASSETS {
            let text = String::from_utf8_lossy(asset.bytes);
            for remote in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "url(\"http",
                "@import",
                "from \"http",
            ] {
                assert!(!text.contains(remote), "{}: {remote}", asset.name);
            }
            for unsafe_sink in [
                "eval(",
                "new Function",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!text.contains(unsafe_sink), "{}: {unsafe_sink}", asset.name);
            }
        }
    }
}
