//! What every request and response goes through: the `Host` allow-list
//! (DNS rebinding), same-origin checks on every write (CSRF), and the
//! security headers on every response (CSP, no framing, no sniffing).
//!
//! Alertmanager and other programs send neither `Origin` nor
//! `Sec-Fetch-Site`, so they pass; a browser sends them on every cross-site
//! write, which is refused. UI forms also carry a per-process token
//! ([`AppState::csrf`]).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The policy of every response: nothing but this origin's own files, no
/// inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";

/// The request's `Host` as sent (port included), lower case.
fn host_of(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    Some(host)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:9095
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether `host` (as sent) is allowed by `allowed`. An IP address always
/// is: a rebinding page is served under a name, so a request that names an
/// address reached the address it named (Prometheus scrapes a pod by its IP,
/// which no configuration can list in advance).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let bare = strip_port(host);
    let literal = bare
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bare);
    literal.parse::<std::net::IpAddr>().is_ok() || allowed.iter().any(|a| a == host || a == bare)
}

/// Refuses requests for other host names (when an allow-list is set) and
/// cross-site writes.
pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    // Health checks (a container's HEALTHCHECK, a load balancer) come by
    // address, and reveal nothing a rebinding page could use.
    let probe =
        matches!(req.uri().path(), "/-/healthy" | "/-/ready") && req.method() == Method::GET;
    if let (Some(allowed), Some(host), false) = (&s.http.allowed_hosts, host_of(headers), probe) {
        if !host_allowed(&host, allowed) {
            return ApiError::MisdirectedHost(host).into_response();
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Err(why) = same_origin(headers) {
            return ApiError::CrossSite(why).into_response();
        }
    }
    next.run(req).await
}

/// A write must not come from another site: `Sec-Fetch-Site` (when sent) is
/// `same-origin` or `none`, and `Origin` (when sent) names this host.
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(format!("Sec-Fetch-Site is `{site}`"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let host = host_of(headers).unwrap_or_default();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if origin_host.is_empty() || origin_host != host {
            return Err(format!("Origin `{origin}` is not this server (`{host}`)"));
        }
    }
    Ok(())
}

/// Adds the security headers to every response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // not `no-referrer`: under it browsers send `Origin: null` on same-origin
        // form posts, which the same-origin check must refuse.
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Checks a UI form's token (constant time).
///
/// # Errors
/// [`ApiError::CrossSite`] when it is missing or wrong.
pub fn check_form_token(s: &AppState, token: &str) -> Result<(), ApiError> {
    if super::ct_eq(token.as_bytes(), s.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::CrossSite(
            "the form's token is missing or stale (reload the page)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_or_without_port() {
        let allowed = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ];
        assert!(host_allowed("127.0.0.1:9095", &allowed));
        assert!(host_allowed("localhost", &allowed));
        assert!(host_allowed("[::1]:9095", &allowed));
        assert!(!host_allowed("evil.example:9095", &allowed));
        assert!(!host_allowed("127.0.0.1.evil.example", &allowed));
        // Addresses are not names: a pod scraped by its IP.
        let named = vec!["runbookd.monitoring.svc".to_owned()];
        assert!(host_allowed("10.244.1.7:9095", &named));
        assert!(host_allowed("[fd00::7]:9095", &named));
        assert!(!host_allowed("10.244.1.7.nip.io:9095", &named));
        assert!(!host_allowed(
            "runbookd.monitoring.svc.evil.example",
            &named
        ));
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9095"));
        assert!(same_origin(&h).is_ok(), "no browser headers: a program");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9095"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }
}
