//! Everything about one upstream: DDM's `ListBackups`, its JSON, its errors and its auth.

pub mod agency;
pub mod auth;
pub mod client;
pub mod error;
pub mod instances;
pub mod model;
pub mod organizations;
pub mod retry;
pub mod sign;
pub mod standing;
pub mod time;
pub mod token;

pub use crate::wire::EncodedPage;
pub use agency::{AccountRef, Agency, Grant};
pub use auth::{Credential, CredentialKind};
pub use client::{
    Call, ClientOptions, DdmClient, Gate, MAX_PAGE_SIZE, PageRequest, Pushdown, RetryPolicy,
};
pub use error::DdmError;
pub use instances::{Instance, InstanceList, InstancesRequest};
