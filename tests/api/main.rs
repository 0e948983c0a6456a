//! The integration tests, compiled into one binary: the real service on
//! loopback, an embedded SurrealDB, and an in-process fake Hugging Face Hub.

mod helpers;
mod support {
    pub mod archives;
    pub mod cutting_proxy;
    pub mod dashboard_browser;
    pub mod fake_hub;
    pub mod git_server;
    pub mod hf_client;
    pub mod hygiene;
    pub mod probe_gate;
    pub mod process;
    pub mod surreal_server;
    pub mod venv;
    pub mod webhook_receiver;
}

mod cli;
mod cluster;
mod concurrency;
mod crash;
mod dashboard;
mod downloads;
mod events;
mod github;
mod huggingface;
mod local;
mod mirror;
mod models;
mod operations;
mod restart;
mod retention;
mod security;
mod store;
mod tasks;
mod webhooks;
