//! API errors: a stable code, a human message, an HTTP status.

use axum::{
    extract::rejection::{JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::ingest::IngestError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 408 `too_slow`: the request body came slower than the node's minimum rate.
    pub fn too_slow() -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "too_slow",
            super::throttle::TooSlow.to_string(),
        )
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        let message = err.to_string();
        match err {
            IngestError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", message)
            }
            IngestError::Refused(inner) if inner.is_retryable() => {
                ApiError::new(StatusCode::CONFLICT, "not_yet", message)
            }
            IngestError::Refused(_) => ApiError::new(StatusCode::FORBIDDEN, "refused", message),
            IngestError::UnknownThread(_)
            | IngestError::UnknownContact(_)
            | IngestError::UnknownEvent(_) => ApiError::not_found(message),
            IngestError::ForeignScope(_) => ApiError::forbidden(message),
            IngestError::HandleNotOfContact { .. } => {
                ApiError::new(StatusCode::CONFLICT, "handle_not_of_contact", message)
            }
            IngestError::FilesNotCarried { .. } => {
                ApiError::new(StatusCode::CONFLICT, "attachments_not_supported", message)
            }
            IngestError::NotACustomerMessage(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_customer_message",
                message,
            ),
            IngestError::TemplateNotCarried { .. } => {
                ApiError::new(StatusCode::CONFLICT, "templates_not_supported", message)
            }
            IngestError::NoConversation { .. } | IngestError::NothingToContinue { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "no_conversation", message)
            }
            IngestError::AttachmentNotYours { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "attachment_not_yours", message)
            }
            IngestError::MissingBlob { .. } => {
                ApiError::new(StatusCode::CONFLICT, "missing_attachment", message)
            }
            IngestError::Full(cap) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, cap.code(), message)
            }
            IngestError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            IngestError::NotDurable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                message,
            ),
            _ => ApiError::internal(message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(_)
                if super::throttle::is_too_slow(
                    &rejection as &(dyn std::error::Error + 'static),
                ) =>
            {
                ApiError::too_slow()
            }
            JsonRejection::BytesRejection(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                rejection.body_text(),
            ),
            _ => ApiError::bad_request(rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        ApiError::internal(err.to_string())
    }
}

/// Answer for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Answer for a known route asked with a method it does not take (axum adds the `Allow`
/// header).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}"),
    )
}
