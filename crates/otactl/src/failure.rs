//! Why a command did not succeed, and the exit code each reason maps to.

use std::fmt;

use ota_core::wire::Problem;

/// A command that did not succeed. Messages never include the admin token.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or local input (a missing file, no server URL): exit 2.
    Usage(String),
    /// The server answered with a problem document: exit 1.
    Refused(Problem),
    /// The server answered, but not as the API says, or a result did not
    /// check out (a hash mismatch): exit 1.
    Failed(String),
    /// No answer from the server: connection refused, DNS, TLS, timeout: exit 3.
    Unreachable(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Refused(_) | Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
        }
    }

    /// The failure for `--json` output: a refusal is the server's problem
    /// document; the others are problem documents of otactl's own.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, title, detail) = match self {
            Failure::Refused(problem) => return serde_json::to_value(problem).unwrap_or_default(),
            Failure::Usage(detail) => ("usage", "Usage error", detail),
            Failure::Failed(detail) => ("failed", "Failed", detail),
            Failure::Unreachable(detail) => ("unreachable", "The server cannot be reached", detail),
        };
        serde_json::json!({
            "type": format!("urn:otactl:{kind}"),
            "title": title,
            "detail": detail,
            "exit_code": self.exit_code(),
        })
    }

    /// The message without its `error:` prefix.
    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(message) | Failure::Failed(message) | Failure::Unreachable(message) => message,
            Failure::Refused(problem) => &problem.detail,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure::Failed(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) => write!(f, "error: {message}"),
            Failure::Failed(message) => write!(f, "error: {message}"),
            Failure::Unreachable(message) => write!(f, "error: the server cannot be reached: {message}"),
            Failure::Refused(problem) => {
                write!(f, "error: {} (HTTP {})", problem.title, problem.status)?;
                if !problem.detail.is_empty() {
                    write!(f, ": {}", problem.detail)?;
                }
                if let Some(field) = &problem.field {
                    write!(f, " [field: {field}]")?;
                }
                Ok(())
            }
        }
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;
