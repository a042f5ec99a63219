//! The HTTP handlers, one module per resource.

pub mod campaigns;
pub mod coupons;
pub mod events;
pub mod issue;
pub mod ops;
