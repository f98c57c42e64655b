//! backupgw: one gRPC endpoint for every Huawei Cloud DDM backup, in every project and region.
//!
//! A connection enters in [`listener`], a request in [`api`] after [`callers`] established who
//! asks; it fans out in [`inventory`], goes through the page [`cache`], and leaves for the
//! upstream in [`ddm::client`]. [`server`] wires them; [`sim`] is the built-in DDM simulator.

pub mod accounts;
pub mod api;
pub mod cache;
pub mod callers;
pub mod config;
pub mod ddm;
pub mod demo;
pub mod discovery;
pub mod inventory;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod rate;
pub mod report;
pub mod server;
pub mod shared;
pub mod shell;
pub mod sim;
pub mod tls;
pub mod wire;

/// The generated gRPC contract (`proto/backupgw/v1/backupgw.proto`).
pub mod pb {
    tonic::include_proto!("backupgw.v1");
    pub use crate::wire::ListBackupsResponse;
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("backupgw_descriptor");
}
