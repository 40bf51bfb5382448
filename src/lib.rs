//! switchyard: classify, route and price batch LLM jobs under a budget, and run them.
//!
//! Data flows one way. `cli` turns flags into settings and `commands` runs them. Every
//! command shares one front end, `evaluate`: `input` reads records, `classify` decides
//! the task, `route` picks and prices eligible models (`tokens`, `money`, `config`).
//! `plan` and `classify` fold what it yields and render it; `run` (only `commands::run`
//! uses it) executes the records against a `provider`, keeps the `journal`, and writes
//! the `output`. `record` and `exit` are the vocabulary all of them share.

pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod evaluate;
pub mod exit;
pub mod input;
pub mod journal;
pub mod ledger;
pub mod log;
pub mod money;
pub mod output;
pub mod provider;
pub mod record;
pub mod route;
pub mod run;
pub mod tokens;
