//! Black-box tests of the reference server `examples/agent_server.rs`, one binary: its command
//! line, routes and output (`server`), and its sandbox store, in memory and shared by two
//! replicas through Redis (`replicas`).

#[path = "../common/mod.rs"]
mod common;
#[cfg(feature = "redis")]
#[path = "../redis_support/mod.rs"]
mod redis_support;

mod authz;
mod jwks;
mod replicas;
mod server;
