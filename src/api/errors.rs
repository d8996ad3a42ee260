//! One error type for every route: a status code chosen in one `match`, and
//! a JSON body `{"error": "...", "status": N}`. 5xx bodies never carry
//! internals; the cause is logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials: send a user's, or without auth.users the operator credential runbookd made in its data directory (`operator.token`, which the CLI reads by itself), or sign in at /login (docs/operators.md)")]
    Unauthorized,
    #[error("missing or invalid webhook credentials: send Alertmanager's `http_config` credential ({0})")]
    WebhookUnauthorized(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the run queue is full; retry later")]
    QueueFull,
    #[error("the store is unavailable; retry later")]
    Unavailable,
    #[error("{message}")]
    Invalid {
        message: String,
        errors: Vec<String>,
    },
    #[error("cross-site request refused: {0}")]
    CrossSite(String),
    #[error("host `{0}` is not served here (add it to http.allowed_hosts)")]
    MisdirectedHost(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::WebhookUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CrossSite(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound(what) => ApiError::NotFound(what),
            crate::store::StoreError::QueueFull => ApiError::QueueFull,
            crate::store::StoreError::Conflict(why) => ApiError::Conflict(why),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Unavailable
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut body = json!({"error": self.to_string(), "status": status.as_u16()});
        if let ApiError::Invalid { errors, .. } = &self {
            body["errors"] = json!(errors);
        }
        let mut resp = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized | ApiError::WebhookUnauthorized(_) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"runbookd\", Basic realm=\"runbookd\""),
                );
            }
            ApiError::QueueFull | ApiError::Unavailable => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            _ => {}
        }
        resp
    }
}
