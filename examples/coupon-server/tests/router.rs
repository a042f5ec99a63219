//! The router in process (`tower::ServiceExt::oneshot`): every route and error code
//! of the HTTP contract, auth failures, malformed bodies, rate limits.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{Duration, Utc};
use coupon_core::gate::MockIssueGate;
use coupon_core::log::MockEventLog;
use coupon_core::memory::{MemoryGate, MemoryLog, MemoryStore};
use coupon_core::{
    AckMode, BackendError, Campaign, CampaignState, Component, ErrorKind, EventLog, IssueEvent, IssueGate, IssueStore,
    NewCampaign, UserId, Validity,
};
use coupon_server::{Auth, Backends, Claims, Server, ServerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    router: Router,
    auth: Auth,
}

fn config() -> ServerConfig {
    let mut config = ServerConfig::defaults();
    config.jwt_secret = Some("router-test-secret".into());
    config.user_rate_limit = 0;
    config
}

async fn api_with(config: ServerConfig, backends: Backends) -> Api {
    let server = Server::build(&config, backends).await.expect("server builds");
    Api {
        router: server.router(),
        auth: Auth::new(config.jwt_secret.as_deref().unwrap()),
    }
}

async fn api() -> Api {
    api_with(config(), Backends::in_memory()).await
}

impl Api {
    fn token(&self, sub: &str, role: Option<&str>) -> String {
        self.auth.mint(&Claims::new(sub, role.map(str::to_owned), 600))
    }

    fn admin(&self) -> String {
        self.token("ops", Some("admin"))
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = match body {
            Some(b) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, bytes) = self.raw(method, path, token, body.map(|b| b.to_string())).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, v) = self
            .call(Method::POST, "/v1/campaigns", Some(&self.admin()), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    async fn open_campaign(&self, total: u64, extra: Value) -> String {
        let mut body = campaign_body(total);
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let id = self.create(body).await["id"].as_str().unwrap().to_owned();
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/v1/campaigns/{id}/open"),
                Some(&self.admin()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        id
    }

    async fn issue(&self, campaign: &str, user: &str) -> (StatusCode, Value) {
        let token = self.token(user, None);
        self.call(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/issue"),
            Some(&token),
            None,
        )
        .await
    }
}

fn campaign_body(total: u64) -> Value {
    let now = Utc::now();
    json!({
        "name": "Launch",
        "total_quantity": total,
        "issue_starts_at": (now - Duration::minutes(1)).to_rfc3339(),
        "issue_ends_at": (now + Duration::hours(1)).to_rfc3339(),
    })
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn create_campaign_answers_201_with_the_campaign() {
    let api = api().await;
    let mut body = campaign_body(100);
    body["per_user_limit"] = json!(2);
    body["valid_days"] = json!(7);
    body["min_order_amount"] = json!(10_000);
    body["discount"] = json!("10% off");
    let v = api.create(body).await;
    assert!(v["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok(), "{v}");
    assert_eq!(v["state"], "draft");
    assert_eq!(v["total_quantity"], 100);
    assert_eq!(v["remaining"], 100);
    assert_eq!(v["issued"], 0);
    assert_eq!(v["per_user_limit"], 2);
    assert_eq!(v["valid_days"], 7);
    assert_eq!(v["min_order_amount"], 10_000);
    assert_eq!(v["discount"], "10% off");
}

#[tokio::test]
async fn create_campaign_refuses_bad_input_and_bad_callers() {
    let api = api().await;
    let admin = api.admin();
    let path = "/v1/campaigns";
    let (s, v) = api.call(Method::POST, path, None, Some(campaign_body(1))).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v) = api
        .call(Method::POST, path, Some("not-a-jwt"), Some(campaign_body(1)))
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let forged = Auth::new("another-secret").mint(&Claims::new("ops", Some("admin".into()), 600));
    let (s, v) = api
        .call(Method::POST, path, Some(&forged), Some(campaign_body(1)))
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let expired = api.auth.mint(&Claims {
        sub: "ops".into(),
        role: Some("admin".into()),
        exp: 1_000,
    });
    let (s, v) = api
        .call(Method::POST, path, Some(&expired), Some(campaign_body(1)))
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let user = api.token("alice", None);
    let (s, v) = api.call(Method::POST, path, Some(&user), Some(campaign_body(1))).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");

    let (s, _, bytes) = api
        .raw(Method::POST, path, Some(&admin), Some("{\"name\": ".into()))
        .await;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");

    let mut zero = campaign_body(0);
    zero["name"] = json!("zero");
    let (s, v) = api.call(Method::POST, path, Some(&admin), Some(zero)).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert!(v["message"].as_str().unwrap().contains("total_quantity"), "{v}");
    let mut backwards = campaign_body(5);
    backwards["issue_ends_at"] = json!((Utc::now() - Duration::hours(2)).to_rfc3339());
    let (s, v) = api.call(Method::POST, path, Some(&admin), Some(backwards)).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let mut both = campaign_body(5);
    both["valid_days"] = json!(3);
    both["valid_until"] = json!((Utc::now() + Duration::days(9)).to_rfc3339());
    let (s, v) = api.call(Method::POST, path, Some(&admin), Some(both)).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let mut wrong_type = campaign_body(5);
    wrong_type["total_quantity"] = json!("many");
    let (s, v) = api.call(Method::POST, path, Some(&admin), Some(wrong_type)).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn campaign_lifecycle_routes_answer_with_counts() {
    let api = api().await;
    let admin = api.admin();
    let id = api.create(campaign_body(3)).await["id"].as_str().unwrap().to_owned();

    let (s, v) = api.call(Method::GET, &format!("/v1/campaigns/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["state"].as_str(),
            v["total_quantity"].as_u64(),
            v["remaining"].as_u64(),
            v["issued"].as_u64()
        ),
        (Some("draft"), Some(3), Some(3), Some(0))
    );

    let (s, v) = api.issue(&id, "early").await;
    assert_error(s, &v, StatusCode::CONFLICT, "not_open");

    let user = api.token("alice", None);
    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/open"), Some(&user), None)
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/open"), Some(&admin), None)
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["remaining"].as_u64()),
        (StatusCode::OK, Some("open"), Some(3))
    );

    assert_eq!(api.issue(&id, "alice").await.0, StatusCode::CREATED);
    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/sync"), Some(&admin), None)
        .await;
    assert_eq!(
        (s, v["issued"].as_u64(), v["stored"].as_u64(), v["remaining"].as_u64()),
        (StatusCode::OK, Some(1), Some(1), Some(2)),
        "{v}"
    );

    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/close"), Some(&admin), None)
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("closed")), "{v}");
    let (s, v) = api.issue(&id, "late").await;
    assert_error(s, &v, StatusCode::GONE, "closed");
    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/open"), Some(&admin), None)
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "invalid_transition");

    let unknown = uuid::Uuid::now_v7();
    let (s, v) = api
        .call(Method::GET, &format!("/v1/campaigns/{unknown}"), None, None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "campaign_not_found");
    for action in ["open", "close", "sync"] {
        let (s, v) = api
            .call(
                Method::POST,
                &format!("/v1/campaigns/{unknown}/{action}"),
                Some(&admin),
                None,
            )
            .await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "campaign_not_found");
    }
    let (s, v) = api.call(Method::GET, "/v1/campaigns/not-a-uuid", None, None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn issue_answers_every_outcome() {
    let api = api().await;
    let id = api.open_campaign(2, json!({})).await;
    let (s, v) = api.issue(&id, "alice").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["campaign_id"].as_str(), v["user_id"].as_str()),
        (Some(id.as_str()), Some("alice"))
    );
    assert!(v["coupon_id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(
        v["issued_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .is_ok()
    );

    let (s, v) = api.issue(&id, "alice").await;
    assert_error(s, &v, StatusCode::CONFLICT, "already_issued");
    assert_eq!(api.issue(&id, "bob").await.0, StatusCode::CREATED);
    let (s, v) = api.issue(&id, "carol").await;
    assert_error(s, &v, StatusCode::GONE, "sold_out");
    let (s, v) = api.issue(&uuid::Uuid::now_v7().to_string(), "alice").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "campaign_not_found");
    let (s, v) = api
        .call(Method::POST, &format!("/v1/campaigns/{id}/issue"), None, None)
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");

    let (s, v) = api.call(Method::GET, &format!("/v1/campaigns/{id}"), None, None).await;
    assert_eq!(
        (s, v["remaining"].as_u64(), v["issued"].as_u64()),
        (StatusCode::OK, Some(0), Some(2))
    );
}

#[tokio::test]
async fn my_coupons_and_redemption() {
    let api = api().await;
    let id = api.open_campaign(5, json!({"min_order_amount": 10_000})).await;
    let (_, issued) = api.issue(&id, "alice").await;
    let coupon = issued["coupon_id"].as_str().unwrap().to_owned();
    let alice = api.token("alice", None);
    let bob = api.token("bob", None);

    let (s, v) = api.call(Method::GET, "/v1/me/coupons", Some(&alice), None).await;
    assert_eq!(s, StatusCode::OK);
    let list = v["coupons"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0]["coupon_id"].as_str(),
            list[0]["campaign_id"].as_str(),
            list[0]["state"].as_str()
        ),
        (Some(coupon.as_str()), Some(id.as_str()), Some("issued"))
    );
    assert!(list[0]["issued_at"].is_string() && list[0]["valid_until"].is_string());
    let (s, v) = api.call(Method::GET, "/v1/me/coupons", Some(&bob), None).await;
    assert_eq!((s, v["coupons"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (s, v) = api.call(Method::GET, "/v1/me/coupons", None, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");

    let redeem = format!("/v1/coupons/{coupon}/redeem");
    let (s, v) = api
        .call(
            Method::POST,
            &redeem,
            Some(&alice),
            Some(json!({"order_id": "o-1", "order_amount": 500})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "condition_not_met");
    let (s, v) = api
        .call(
            Method::POST,
            &redeem,
            Some(&bob),
            Some(json!({"order_id": "o-1", "order_amount": 50_000})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "coupon_not_found");
    let (s, _, bytes) = api
        .raw(Method::POST, &redeem, Some(&alice), Some("not json".into()))
        .await;
    assert_error(
        s,
        &serde_json::from_slice(&bytes).unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let (s, v) = api
        .call(
            Method::POST,
            &redeem,
            Some(&alice),
            Some(json!({"order_id": " ", "order_amount": 50_000})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, v) = api
        .call(
            Method::POST,
            &redeem,
            Some(&alice),
            Some(json!({"order_id": "o-1", "order_amount": 50_000})),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["order_id"].as_str()),
        (StatusCode::OK, Some("redeemed"), Some("o-1")),
        "{v}"
    );
    let (s, v) = api
        .call(
            Method::POST,
            &redeem,
            Some(&alice),
            Some(json!({"order_id": "o-2", "order_amount": 50_000})),
        )
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "already_redeemed");
    let unknown = format!("/v1/coupons/{}/redeem", uuid::Uuid::now_v7());
    let (s, v) = api
        .call(
            Method::POST,
            &unknown,
            Some(&alice),
            Some(json!({"order_id": "o-3", "order_amount": 50_000})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "coupon_not_found");
}

#[tokio::test]
async fn redeeming_an_expired_coupon_answers_410() {
    let store = Arc::new(MemoryStore::new());
    let now = Utc::now();
    let mut campaign = Campaign::from_new(
        NewCampaign::new("old", 10, now - Duration::days(10), now - Duration::days(5))
            .with_validity(Validity::Until(now - Duration::days(1))),
        now - Duration::days(11),
    );
    campaign.state = CampaignState::Open;
    store.create_campaign(&campaign).await.unwrap();
    let event = IssueEvent::new(&campaign, UserId::new("alice").unwrap(), 1, now - Duration::days(6));
    store.record(std::slice::from_ref(&event)).await.unwrap();
    let backends = Backends {
        store: store.clone(),
        ..Backends::in_memory()
    };
    let api = api_with(config(), backends).await;
    let alice = api.token("alice", None);
    let (s, v) = api
        .call(
            Method::POST,
            &format!("/v1/coupons/{}/redeem", event.coupon_id),
            Some(&alice),
            Some(json!({"order_id": "o", "order_amount": 1})),
        )
        .await;
    assert_error(s, &v, StatusCode::GONE, "expired");
}

fn unavailable(component: Component, operation: &'static str) -> BackendError {
    BackendError::new(
        component,
        "mock",
        operation,
        ErrorKind::Unavailable,
        "connection refused",
    )
}

/// A campaign already open in the store (so the gate is never asked to open it).
async fn open_in_store(store: &MemoryStore) -> Campaign {
    let now = Utc::now();
    let mut campaign = Campaign::from_new(
        NewCampaign::new("c", 10, now - Duration::minutes(1), now + Duration::hours(1)),
        now,
    );
    campaign.state = CampaignState::Open;
    store.create_campaign(&campaign).await.unwrap();
    campaign
}

#[tokio::test]
async fn a_gate_failure_answers_503_gate_unavailable() {
    let store = Arc::new(MemoryStore::new());
    let campaign = open_in_store(&store).await;
    let mut gate = MockIssueGate::new();
    gate.expect_backend().return_const("mock");
    gate.expect_admit()
        .returning(|_, _, _, _| Err(unavailable(Component::Gate, "admit")));
    let backends = Backends {
        gate: Arc::new(gate),
        gate_in_memory: false,
        store,
        ..Backends::in_memory()
    };
    let api = api_with(config(), backends).await;
    let token = api.token("alice", None);
    let (s, headers, bytes) = api
        .raw(
            Method::POST,
            &format!("/v1/campaigns/{}/issue", campaign.id),
            Some(&token),
            None,
        )
        .await;
    assert_error(
        s,
        &serde_json::from_slice(&bytes).unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "gate_unavailable",
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn a_log_failure_answers_503_log_unavailable_and_returns_the_stock() {
    let store = Arc::new(MemoryStore::new());
    let campaign = open_in_store(&store).await;
    let gate = Arc::new(MemoryGate::new());
    gate.open(&campaign.gate_spec()).await.unwrap();
    let mut log = MockEventLog::new();
    log.expect_backend().return_const("mock");
    log.expect_publish()
        .returning(|_| Err(unavailable(Component::Log, "publish")));
    // The in-process recorder subscribes at build time; give it an empty source.
    let source = MemoryLog::new().subscribe("coupon-recorder").await.unwrap();
    log.expect_subscribe().return_once(move |_| Ok(source));
    let backends = Backends {
        gate: gate.clone(),
        gate_in_memory: false,
        log: Arc::new(log),
        kafka: None,
        store,
    };
    let mut config = config();
    config.ack = Some(AckMode::AfterLog);
    let api = api_with(config, backends).await;
    let (s, v) = api.issue(&campaign.id.to_string(), "alice").await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "log_unavailable");
    let counts = gate.counts(&campaign.id).await.unwrap().unwrap();
    assert_eq!(counts.remaining, 10, "the reservation was released");
}

#[tokio::test]
async fn rate_limits_answer_429_before_any_backend() {
    // A gate with no expectations: any call to it panics, so a 429 proves it was not touched.
    let store = Arc::new(MemoryStore::new());
    let campaign = open_in_store(&store).await;
    let backends = || Backends {
        gate: Arc::new({
            let mut g = MockIssueGate::new();
            g.expect_backend().return_const("mock");
            g
        }),
        gate_in_memory: false,
        store: store.clone(),
        ..Backends::in_memory()
    };
    let issue = format!("/v1/campaigns/{}/issue", campaign.id);

    let mut per_user = config();
    per_user.user_rate_limit = 1;
    let api = api_with(per_user, backends()).await;
    let alice = api.token("alice", None);
    assert_eq!(
        api.call(Method::GET, "/v1/me/coupons", Some(&alice), None).await.0,
        StatusCode::OK
    );
    let (s, headers, bytes) = api.raw(Method::POST, &issue, Some(&alice), None).await;
    assert_error(
        s,
        &serde_json::from_slice(&bytes).unwrap(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let retry: u64 = headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let bob = api.token("bob", None);
    assert_eq!(
        api.call(Method::GET, "/v1/me/coupons", Some(&bob), None).await.0,
        StatusCode::OK,
        "another user has their own budget"
    );

    let mut global = config();
    global.rate_limit = 1;
    let api = api_with(global, backends()).await;
    let alice = api.token("alice", None);
    let bob = api.token("bob", None);
    assert_eq!(
        api.call(Method::GET, "/v1/me/coupons", Some(&alice), None).await.0,
        StatusCode::OK
    );
    let (s, headers, bytes) = api.raw(Method::POST, &issue, Some(&bob), None).await;
    assert_error(
        s,
        &serde_json::from_slice(&bytes).unwrap(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
}

/// A client picks the campaign id in the path: an id that names no campaign must not
/// become a label value, or any client could grow the metrics registry without bound.
#[tokio::test]
async fn issue_requests_for_unknown_campaigns_share_one_metrics_series() {
    let api = api().await;
    let unknown: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &unknown {
        let (s, v) = api.issue(id, "mallory").await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "campaign_not_found");
    }
    let (_, _, bytes) = api.raw(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8(bytes).unwrap();
    for id in &unknown {
        assert!(
            !text.contains(id.as_str()),
            "/metrics labels a series with the unknown campaign {id}:\n{text}"
        );
    }
    assert!(
        text.contains("coupon_issue_outcomes_total{campaign=\"unknown\",outcome=\"campaign_not_found\"}"),
        "/metrics lacks the shared series of unknown campaigns:\n{text}"
    );
}

#[tokio::test]
async fn ops_routes() {
    let api = api().await;
    let id = api.open_campaign(1, json!({})).await;
    api.issue(&id, "alice").await;
    api.issue(&id, "bob").await;

    let (s, v) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")), "{v}");
    assert_eq!(v["backends"]["gate"], "ok");

    let (s, headers, bytes) = api.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(bytes).unwrap();
    for needle in [
        "coupon_http_requests_total",
        "route=\"/v1/campaigns/{id}/issue\"",
        "coupon_http_request_duration_seconds_bucket",
        "coupon_gate_admit_seconds_bucket",
        &format!("coupon_issue_outcomes_total{{campaign=\"{id}\",outcome=\"issued\"}}"),
        &format!("coupon_issue_outcomes_total{{campaign=\"{id}\",outcome=\"sold_out\"}}"),
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }

    let (s, v) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/campaigns",
        "/v1/campaigns/{id}",
        "/v1/campaigns/{id}/open",
        "/v1/campaigns/{id}/close",
        "/v1/campaigns/{id}/sync",
        "/v1/campaigns/{id}/issue",
        "/v1/me/coupons",
        "/v1/coupons/{id}/redeem",
        "/v1/coupons/{id}/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(v["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let (s, v) = api.call(Method::GET, "/nope", None, None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn events_stream_stored_then_redeemed() {
    let api = api().await;
    let id = api.open_campaign(5, json!({})).await;
    let (_, issued) = api.issue(&id, "alice").await;
    let coupon = issued["coupon_id"].as_str().unwrap().to_owned();
    let alice = api.token("alice", None);

    let (s, v) = api
        .call(
            Method::GET,
            &format!("/v1/coupons/{coupon}/events"),
            Some(&api.token("bob", None)),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "coupon_not_found");

    let request = Request::get(format!("/v1/coupons/{coupon}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body();
    let mut next_event = async || loop {
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8(data.to_vec()).unwrap();
            if text.starts_with("event:") {
                return text;
            }
        }
    };
    let stored = next_event().await;
    assert!(
        stored.starts_with("event: stored\n") && stored.contains(&coupon),
        "{stored}"
    );
    let (s, _) = api
        .call(
            Method::POST,
            &format!("/v1/coupons/{coupon}/redeem"),
            Some(&alice),
            Some(json!({"order_id": "o", "order_amount": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let redeemed = next_event().await;
    assert!(
        redeemed.starts_with("event: redeemed\n") && redeemed.contains("\"state\":\"redeemed\""),
        "{redeemed}"
    );
}

#[tokio::test]
async fn with_after_log_on_the_memory_log_the_in_process_recorder_stores_and_drains_at_shutdown() {
    let mut config = config();
    config.ack = Some(AckMode::AfterLog);
    let store = Arc::new(MemoryStore::new());
    let backends = Backends {
        store: store.clone(),
        ..Backends::in_memory()
    };
    let server = Server::build(&config, backends).await.unwrap();
    let api = Api {
        router: server.router(),
        auth: Auth::new(config.jwt_secret.as_deref().unwrap()),
    };
    let id = api.open_campaign(3, json!({})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut coupons = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let response = client
            .post(format!("http://{addr}/v1/campaigns/{id}/issue"))
            .bearer_auth(api.token(user, None))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let v: Value = response.json().await.unwrap();
        coupons.push(
            v["coupon_id"]
                .as_str()
                .unwrap()
                .parse::<coupon_core::CouponId>()
                .unwrap(),
        );
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    for coupon in coupons {
        assert!(
            store.coupon(&coupon).await.unwrap().is_some(),
            "{coupon} stored by the time run() returns"
        );
    }
}

#[tokio::test]
async fn the_server_refuses_to_start_without_a_secret() {
    let config = ServerConfig::defaults();
    let err = Server::build(&config, Backends::in_memory()).await.unwrap_err();
    assert!(err.to_string().contains("COUPON_JWT_SECRET"), "{err}");
    let mut dev = ServerConfig::defaults();
    dev.dev = true;
    assert!(Server::build(&dev, Backends::in_memory()).await.is_ok());
}

/// F3: a grace period a reconciler could void a still-acknowledging admission within
/// is refused at start, naming the setting that fixes it.
#[tokio::test]
async fn the_server_refuses_a_reconcile_grace_shorter_than_twice_the_ack_deadline() {
    let mut unsafe_config = config();
    unsafe_config.reconcile_grace_secs = 5;
    let err = Server::build(&unsafe_config, Backends::in_memory()).await.unwrap_err();
    assert!(err.to_string().contains("COUPON_RECONCILE_GRACE_SECS"), "{err}");
    let mut faster_acks = config();
    faster_acks.reconcile_grace_secs = 5;
    faster_acks.ack_timeout_ms = 1_000;
    assert!(Server::build(&faster_acks, Backends::in_memory()).await.is_ok());
}

#[tokio::test]
async fn the_operators_status_shows_the_counts_the_gate_and_the_recorders_lag() {
    let backends = Backends::in_memory();
    let gate = backends.gate.clone();
    let api = api_with(config(), backends).await;
    let id = api.open_campaign(3, json!({})).await;
    api.issue(&id, "alice").await;
    api.issue(&id, "bob").await;
    let path = format!("/v1/campaigns/{id}/status");

    let (s, v) = api
        .call(Method::GET, &path, Some(&api.token("alice", None)), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.call(Method::GET, &path, Some(&api.admin()), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["issued"].as_u64(),
            v["remaining"].as_u64(),
            v["voided"].as_u64(),
            v["gate"].as_str()
        ),
        (Some(2), Some(1), Some(0), Some("serving")),
        "{v}"
    );
    assert_eq!(v["stored"].as_u64().unwrap() + v["pending"].as_u64().unwrap(), 2, "{v}");
    assert!(v["recorder_lag_seconds"].as_f64().is_some_and(|lag| lag >= 0.0), "{v}");
    // The public read does not ask the log.
    let (_, public) = api.call(Method::GET, &format!("/v1/campaigns/{id}"), None, None).await;
    assert!(public.get("recorder_lag_seconds").is_none(), "{public}");
    assert_eq!(public["gate"], "serving");

    gate.fence(&id.parse().unwrap()).await.unwrap();
    let (_, v) = api.call(Method::GET, &path, Some(&api.admin()), None).await;
    assert_eq!(v["gate"], "fenced", "{v}");
    let (s, _) = api
        .call(
            Method::GET,
            &format!("/v1/campaigns/{}/status", uuid::Uuid::new_v4()),
            Some(&api.admin()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_gate_that_does_not_answer_leaves_the_store_counts_on_the_status() {
    let memory = Backends::in_memory();
    let store = memory.store.clone();
    let mut gate = MockIssueGate::new();
    gate.expect_backend().return_const("mock");
    gate.expect_counts().returning(|_| {
        Err(coupon_core::BackendError::new(
            coupon_core::Component::Gate,
            "mock",
            "counts",
            coupon_core::ErrorKind::Unavailable,
            "down",
        ))
    });
    let campaign = coupon_core::Campaign::from_new(
        coupon_core::NewCampaign::new(
            "down",
            5,
            Utc::now() - Duration::hours(1),
            Utc::now() + Duration::hours(1),
        ),
        Utc::now(),
    );
    store.create_campaign(&campaign).await.unwrap();
    let api = api_with(
        config(),
        Backends {
            gate: Arc::new(gate),
            ..memory
        },
    )
    .await;
    let (s, v) = api
        .call(
            Method::GET,
            &format!("/v1/campaigns/{}/status", campaign.id),
            Some(&api.admin()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["gate"].as_str(), v["stored"].as_u64()),
        (Some("unavailable"), Some(0)),
        "{v}"
    );
}
