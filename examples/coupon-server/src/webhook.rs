//! [`Webhook`]: the example [`CouponHook`] that posts each notice to a URL as JSON.
//!
//! The body is `{"notice": "stored" | "redeemed", "coupon": {...}}` (the coupon with
//! its user, as `coupon_core::Coupon` serializes) and the `Idempotency-Key` header is
//! `<coupon id>:<notice>`: a notice is delivered at least once, so the receiver drops
//! what it has seen. Any answer but a 2xx is a failure, retried by the
//! [`HookRunner`](coupon_core::HookRunner) with backoff.

use std::time::Duration;

use async_trait::async_trait;
use coupon_core::Coupon;
use coupon_core::hooks::{CouponHook, HookError, Notice};
use serde::Serialize;

/// Posts notices to one URL (see the module docs).
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
}

#[derive(Serialize)]
struct Body<'a> {
    notice: Notice,
    coupon: &'a Coupon,
}

impl Webhook {
    /// A webhook posting to `url` (`http://`), each request bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("webhook URL {url}: {e}"))?;
        if url.scheme() != "http" {
            anyhow::bail!(
                "webhook URL {url}: only http:// is built in; put a TLS-terminating proxy in front for https"
            );
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("webhook client: {e}"))?;
        Ok(Self { client, url })
    }

    async fn post(&self, notice: Notice, coupon: &Coupon) -> Result<(), HookError> {
        let response = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", format!("{}:{}", coupon.id, notice.as_str()))
            .json(&Body { notice, coupon })
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{} answered {status}", self.url).into());
        }
        Ok(())
    }
}

#[async_trait]
impl CouponHook for Webhook {
    async fn stored(&self, coupon: &Coupon) -> Result<(), HookError> {
        self.post(Notice::Stored, coupon).await
    }

    async fn redeemed(&self, coupon: &Coupon) -> Result<(), HookError> {
        self.post(Notice::Redeemed, coupon).await
    }
}
