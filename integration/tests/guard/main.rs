//! The in-crate integration tests, one binary (one link instead of twelve): every surface
//! over real loopback sockets, the hostile-input cases, the property tests and the JWT
//! verifier. The areas are modules; `cargo test --workspace --test guard <area>::` runs one.

#[path = "../common/mod.rs"]
mod common;

mod authz;
mod behaviour;
mod compose;
mod fuzz_findings;
mod grammar_props;
mod hostile;
mod jwks;
mod jwt;
mod lifecycle;
mod limiter;
mod matrix;
mod random_inputs;
mod rejection_body;
mod secrets;
mod websocket;
mod ws_proxy;
