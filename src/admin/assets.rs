//! The dashboard's files, embedded in the binary (no build step, no CDN: works offline).
//!
//! Owns: the path → (content type, bytes) table. Invariant: only these paths are served;
//! nothing is read from disk at run time. Must not touch: anything else.

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
const LIVE_JS: &str = include_str!("assets/live.js");

/// The embedded file at `path`, if any.
pub fn get(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/dashboard.js" => Some(("text/javascript; charset=utf-8", DASHBOARD_JS)),
        "/live.js" => Some(("text/javascript; charset=utf-8", LIVE_JS)),
        "/dashboard.css" => Some(("text/css; charset=utf-8", DASHBOARD_CSS)),
        "/favicon.ico" => Some(("image/svg+xml", FAVICON_SVG)),
        _ => None,
    }
}

/// A tiny icon, so browsers asking for one get it instead of a console error.
const FAVICON_SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='16' rx='3' fill='#2b6cb0'/></svg>";
