//! Providers: how a request reaches a model. `wire` holds the pure request/response
//! formats of OpenAI-compatible and Anthropic APIs; the HTTP clients and the simulated
//! provider that use them are the executor's (issue #3).

pub mod simulated;
pub mod wire;
