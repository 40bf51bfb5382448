//! switchyard: classify, route and price batch LLM jobs under a budget.
//!
//! The pipeline, one module per stage: `input` reads records, `classify` decides the
//! task, `route` picks and prices eligible models (`tokens`, `money`), `plan` folds a
//! whole job, `report` writes the cost report; `app` wires them into commands.

pub mod app;
pub mod breaker;
pub mod budget;
pub mod catalog;
pub mod checks;
pub mod classify;
pub mod cli;
pub mod config;
pub mod execute;
pub mod input;
pub mod journal;
pub mod limits;
pub mod money;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod pretokenize;
pub mod progress;
pub mod provider;
pub mod record;
pub mod report;
pub mod route;
pub mod tokens;
