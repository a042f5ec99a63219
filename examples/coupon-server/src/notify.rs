//! Coupon notifications for the SSE route: who is waiting hears when a coupon is
//! stored or redeemed by this process; other processes' work is seen by polling.

use coupon_core::{CouponId, IssueEvent, RecordObserver};
use tokio::sync::broadcast;

/// What happened to a coupon: stored or redeemed (the hooks' notices).
pub use coupon_core::hooks::Notice as NoticeKind;

/// A change to one coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    /// The coupon.
    pub coupon_id: CouponId,
    /// What happened.
    pub kind: NoticeKind,
}

/// Fans notices out to every waiting SSE stream.
#[derive(Debug, Clone)]
pub struct Notifier {
    sender: broadcast::Sender<Notice>,
}

impl Default for Notifier {
    fn default() -> Self {
        // A slow stream that lags behind just re-reads the store; nothing is lost.
        Self {
            sender: broadcast::channel(4_096).0,
        }
    }
}

impl Notifier {
    /// A notifier with nobody listening.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells listeners about `notice`.
    pub fn notify(&self, notice: Notice) {
        // An error only means nobody is listening.
        let _ = self.sender.send(notice);
    }

    /// Listens to notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }
}

impl RecordObserver for Notifier {
    fn stored(&self, events: &[IssueEvent]) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for e in events {
            self.notify(Notice {
                coupon_id: e.coupon_id,
                kind: NoticeKind::Stored,
            });
        }
    }
}
