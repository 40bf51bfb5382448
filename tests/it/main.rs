//! The integration tests, one binary: the built `switchyard` driven as a user would,
//! against fixtures and an in-process fake provider on 127.0.0.1.

mod common;
mod fake;
#[path = "../support/fake_batch.rs"]
mod fake_batch;
#[path = "../support/fake_server.rs"]
mod fake_server;

mod batch;
mod cache;
mod cli;
mod history;
mod http;
mod ledger;
mod operator;
mod resume;
mod run;
mod tokens;
mod train;
