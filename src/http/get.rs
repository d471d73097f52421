//! One blocking request (a GET, or a POST of JSON) with the retry rules every HTTP client
//! of polytape shares: 429 and 5xx (and transport errors) are tried again, waiting what
//! `Retry-After` asks (capped) or the backoff; any other status is final.

use std::time::{Duration, SystemTime};

use super::retry_after;
use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// How a client retries.
pub(crate) struct RetryPolicy {
    /// Tries in all (at least one).
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    /// Longest wait a `Retry-After` may ask for.
    pub(crate) max_retry_after: Duration,
    /// Largest body read.
    pub(crate) body_limit: u64,
    /// Names the service in logs and errors (`gamma`, `data api`).
    pub(crate) service: &'static str,
}

impl RetryPolicy {
    /// The configured attempts and backoff (the `gamma_*` settings serve every HTTP service
    /// polytape asks), with this service's name, `Retry-After` cap and body limit.
    pub(crate) fn from_config(
        config: &crate::config::Config,
        service: &'static str,
        max_retry_after: Duration,
        body_limit: u64,
    ) -> RetryPolicy {
        RetryPolicy {
            attempts: config.gamma_attempts,
            backoff: Backoff::new(config.gamma_backoff_min, config.gamma_backoff_max),
            max_retry_after,
            body_limit,
            service,
        }
    }
}

/// The blocking HTTP client of every service polytape asks: a whole-request timeout, statuses
/// left to the caller (they decide what is final), polytape's user agent.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("polytape/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GETs `url` and returns the body of a 200, retrying as `policy` says.
pub(crate) fn get_text(agent: &ureq::Agent, url: &str, policy: &RetryPolicy) -> Result<String> {
    get_text_or_absent(agent, url, policy)?
        .ok_or_else(|| Error::http(format!("{}: {url}: HTTP 404", policy.service)))
}

/// [`get_text`], with a 404 answered as `None`: the endpoint is not served (a service that
/// has not moved to it yet), not a failure.
pub(crate) fn get_text_or_absent(
    agent: &ureq::Agent,
    url: &str,
    policy: &RetryPolicy,
) -> Result<Option<String>> {
    send_or_absent(url, policy, || agent.get(url).call())
}

/// POSTs `body` (JSON) to `url`, as [`get_text_or_absent`] GETs.
pub(crate) fn post_json_or_absent(
    agent: &ureq::Agent,
    url: &str,
    body: &str,
    policy: &RetryPolicy,
) -> Result<Option<String>> {
    send_or_absent(url, policy, || {
        agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
    })
}

/// The retry loop around one request `send` makes.
fn send_or_absent(
    url: &str,
    policy: &RetryPolicy,
    send: impl Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Option<String>> {
    let service = policy.service;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let wait = match send() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status == 200 {
                    return resp
                        .body_mut()
                        .with_config()
                        .limit(policy.body_limit)
                        .read_to_string()
                        .map(Some)
                        .map_err(|e| Error::http(format!("{service}: {url}: reading body: {e}")));
                }
                if status == 404 {
                    return Ok(None);
                }
                if status != 429 && status < 500 {
                    return Err(Error::http(format!("{service}: {url}: HTTP {status}")));
                }
                let asked = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now(), policy.max_retry_after));
                log::warn!("{service}: {url}: HTTP {status} (attempt {attempt})");
                asked.unwrap_or_else(|| policy.backoff.delay(attempt - 1))
            }
            Err(e) => {
                log::warn!("{service}: {url}: {e} (attempt {attempt})");
                policy.backoff.delay(attempt - 1)
            }
        };
        if attempt >= policy.attempts.max(1) {
            return Err(Error::http(format!(
                "{service}: {url}: giving up after {attempt} attempts"
            )));
        }
        std::thread::sleep(wait);
    }
}
