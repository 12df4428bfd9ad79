//! The REST API, as `otactl` calls it: one blocking client, the admin token
//! on admin requests, and every answer turned into JSON or a [`Failure`].

use std::path::Path;
use std::time::Duration;

use ota_core::wire::Problem;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::config::AdminToken;
use crate::failure::{Failure, Result};

/// A server and, for admin requests, its admin token.
pub struct Api {
    http: Client,
    base: Url,
    /// The admin token, or why there is none.
    token: std::result::Result<AdminToken, String>,
    timeout: Duration,
}

impl Api {
    pub fn new(
        base: Url,
        token: std::result::Result<AdminToken, String>,
        timeout: Duration,
        ca_cert: Option<&Path>,
    ) -> Result<Self> {
        let mut builder = Client::builder()
            .user_agent(concat!("otactl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            // Uploads may take longer than any fixed bound; each other
            // request sets its own timeout.
            .timeout(None::<Duration>)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| Failure::usage(format!("cannot read the CA certificate {}: {e}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Failure::usage(format!("{} holds no PEM certificate: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(Failure::usage(format!("{} holds no PEM certificate", path.display())));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Failure::failed(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        let mut base = base;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http,
            base,
            token,
            timeout,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `path` (absolute, as in API.md) under the base URL, which may have a
    /// path prefix of its own behind a proxy.
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone())
    }

    /// A request without credentials (health, readiness).
    pub fn public(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).timeout(self.timeout)
    }

    /// A request with the admin token. Without one, a usage error that says
    /// why there is none.
    pub fn admin(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let token = self.token.as_ref().map_err(|reason| Failure::usage(reason.clone()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| Failure::usage("the admin token cannot be sent in an HTTP header"))?;
        value.set_sensitive(true);
        Ok(self.http.request(method, self.url(path)).header(AUTHORIZATION, value))
    }

    /// An admin request with the usual timeout.
    pub fn admin_timed(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        Ok(self.admin(method, path)?.timeout(self.timeout))
    }

    /// Sends a request and reads a JSON answer; a refusal is its problem.
    pub fn send(&self, request: RequestBuilder) -> Result<Value> {
        let response = request.send().map_err(transport)?;
        read_json(response)
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.get_with(path, query)
    }

    /// A GET whose query is any flat serializable value, such as a filter
    /// struct (its `None` fields skipped).
    pub fn get_with(&self, path: &str, query: &(impl serde::Serialize + ?Sized)) -> Result<Value> {
        self.send(self.admin_timed(Method::GET, path)?.query(query))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.admin_timed(Method::PUT, path)?.json(body))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.admin_timed(Method::POST, path)?.json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.admin_timed(Method::PATCH, path)?.json(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.admin_timed(Method::DELETE, path)?)
    }
}

/// A 2xx answer's JSON, or the failure the answer describes.
pub fn read_json(response: Response) -> Result<Value> {
    let status = response.status();
    let host = response.url().host_str().unwrap_or("the server").to_owned();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|_| {
            Failure::failed(format!(
                "the server answered {status} but not with JSON (is {host} an OTA server?)"
            ))
        });
    }
    if status.is_redirection() {
        return Err(Failure::failed(format!(
            "the server answered {status}, a redirect to {}: use that address as --server",
            location.as_deref().unwrap_or("nowhere")
        )));
    }
    if let Some(problem) = problem_of(status, &body) {
        return Err(Failure::Refused(problem));
    }
    if matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) {
        return Err(Failure::Unreachable(format!(
            "{host} answered {status}: the OTA server behind it does not answer"
        )));
    }
    Err(Failure::Refused(Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: format!("{host} answered without a problem document (is it an OTA server?)"),
        field: None,
    }))
}

/// A problem document, read leniently: RFC 9457 makes every member
/// optional, and a proxy or firewall in front may send only a title.
fn problem_of(status: StatusCode, body: &[u8]) -> Option<Problem> {
    let value: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    if text("title").is_none() && text("detail").is_none() {
        return None;
    }
    Some(Problem {
        kind: text("type").unwrap_or_else(|| "about:blank".into()),
        title: text("title").unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").into()),
        status: value
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(status.as_u16()),
        detail: text("detail").unwrap_or_default(),
        field: text("field"),
    })
}

/// A request that got no answer.
pub fn transport(error: reqwest::Error) -> Failure {
    if error.is_timeout() {
        return Failure::Unreachable(format!("no answer in time ({})", chain(&error)));
    }
    Failure::Unreachable(chain(&error))
}

/// An error with its causes, `: `-separated, as they are the useful part
/// of a connection error ("Connection refused (os error 111)").
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
