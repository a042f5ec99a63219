//! In-memory backends: the embedded default and the fast path for tests.
//!
//! They are production code: correct under heavy concurrency and held to the same
//! [`crate::conformance`] suite as every other backend.

mod gate;
mod log;
mod store;

pub use gate::MemoryGate;
pub use log::MemoryLog;
pub use store::MemoryStore;
