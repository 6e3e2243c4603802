//! The S3 client: object_store's `AmazonS3` with our retry policy, and an HTTP layer under
//! it that counts every request (op, latency, failures, retries) without touching how
//! object_store signs, retries or streams.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::config::Settings;
use crate::error::{RemoteError, Result};
use crate::stats::{Op, RemoteStats};

/// Builds the client. Nothing is sent yet: a bad endpoint or key shows up on the first request.
pub fn build(settings: &Settings, stats: Arc<RemoteStats>) -> Result<AmazonS3> {
    let remote = settings.url.to_string();
    // from_env first, so the AWS_* variables object_store understands (container and web
    // identity credentials, checksum, SSE, ...) keep working; ours then override.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&settings.url.bucket)
        .with_region(&settings.region)
        .with_retry(retry_config())
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(120))
                .with_pool_idle_timeout(Duration::from_secs(30)),
        )
        .with_http_connector(CountingConnector { stats });
    if let Some(e) = &settings.endpoint {
        b = b
            .with_endpoint(e)
            .with_allow_http(e.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    if let (Some(k), Some(s)) = (&settings.access_key_id, &settings.secret_access_key) {
        b = b.with_access_key_id(k).with_secret_access_key(s);
        b = match &settings.session_token {
            Some(t) => b.with_token(t),
            None => b,
        };
    }
    b.build().map_err(|e| RemoteError::Client {
        remote,
        detail: e.to_string(),
    })
}

/// 5xx, 429, timeouts and connection failures are retried with exponential backoff (100 ms
/// doubling up to 5 s, at most 6 tries in 60 s): long enough to ride out a restarting
/// gateway, short enough that a wrong endpoint fails within seconds, not minutes.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
    }
}

#[derive(Debug)]
struct CountingConnector {
    stats: Arc<RemoteStats>,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting {
            inner,
            stats: self.stats.clone(),
            failed: Mutex::new(HashSet::new()),
        }))
    }
}

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    stats: Arc<RemoteStats>,
    /// `METHOD URI` of requests whose last attempt failed: the same request again is
    /// object_store retrying it (our own code never repeats a request).
    failed: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let op = classify(&req);
        let id = format!("{} {}", req.method(), req.uri());
        if self
            .failed
            .lock()
            .map(|mut f| f.remove(&id))
            .unwrap_or(false)
        {
            self.stats.retry(op);
        }
        self.stats.request(op);
        let started = Instant::now();
        let res = self.inner.execute(req).await;
        self.stats.observe(op, started.elapsed());
        let failed = match &res {
            Err(_) => true,
            Ok(r) => {
                let s = r.status();
                let lookup_miss = s.as_u16() == 404 && matches!(op, Op::Head | Op::Get);
                (s.is_client_error() && !lookup_miss) || s.is_server_error()
            }
        };
        if failed {
            self.stats.error(op);
            if let Ok(mut f) = self.failed.lock() {
                f.insert(id);
            }
        }
        res
    }
}

/// The op a request serves, from its method and query (S3's REST API is that regular).
fn classify(req: &HttpRequest) -> Op {
    let query = req.uri().query().unwrap_or("");
    let has = |k: &str| {
        query
            .split('&')
            .any(|kv| kv == k || kv.starts_with(&format!("{k}=")))
    };
    match req.method().as_str() {
        "HEAD" => Op::Head,
        "GET" if has("list-type") || has("prefix") || has("delimiter") => Op::List,
        "GET" => Op::Get,
        "POST" => Op::Multipart,
        "PUT" | "DELETE" if has("uploadId") => Op::Multipart,
        _ => Op::Put,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str) -> HttpRequest {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(object_store::client::HttpRequestBody::empty())
            .unwrap()
    }

    #[test]
    fn ops_from_requests() {
        let b = "http://127.0.0.1:9/bkt";
        assert_eq!(classify(&req("HEAD", &format!("{b}/k"))), Op::Head);
        assert_eq!(
            classify(&req(
                "GET",
                &format!("{b}?list-type=2&prefix=blake3%2F00%2F")
            )),
            Op::List
        );
        assert_eq!(classify(&req("GET", &format!("{b}/k"))), Op::Get);
        assert_eq!(classify(&req("PUT", &format!("{b}/k"))), Op::Put);
        assert_eq!(
            classify(&req("POST", &format!("{b}/k?uploads"))),
            Op::Multipart
        );
        assert_eq!(
            classify(&req("PUT", &format!("{b}/k?partNumber=1&uploadId=x"))),
            Op::Multipart
        );
        assert_eq!(
            classify(&req("DELETE", &format!("{b}/k?uploadId=x"))),
            Op::Multipart
        );
    }
}
