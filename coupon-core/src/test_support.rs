//! Shared fixtures for the unit tests.

use std::sync::Arc;

use chrono::Duration;

use crate::domain::{Campaign, CampaignState, NewCampaign, UserId, timestamp_now};
use crate::error::{BackendError, Component, ErrorKind};
use crate::store::MockIssueStore;

pub fn campaign(state: CampaignState) -> Campaign {
    let now = timestamp_now();
    let mut c = Campaign::from_new(
        NewCampaign::new("unit", 10, now - Duration::hours(1), now + Duration::hours(1)),
        now,
    );
    c.state = state;
    c
}

pub fn alice() -> UserId {
    UserId::new("alice").unwrap()
}

pub fn err(component: Component, kind: ErrorKind) -> BackendError {
    BackendError::new(component, "mock", "op", kind, "injected")
}

/// A store mock that serves `campaign` from `campaign()` any number of times.
pub fn store_serving(campaign: &Campaign) -> MockIssueStore {
    let mut store = MockIssueStore::new();
    let c = campaign.clone();
    store.expect_campaign().returning(move |_| Ok(Some(c.clone())));
    store.expect_backend().return_const("mock");
    store
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
