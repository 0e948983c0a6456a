//! A SurrealDB server for the multi-node tests, built from the same
//! `surrealdb-server` crate the official `surreal` binary is: the tests
//! start it as `surreal_server start --bind 127.0.0.1:PORT --user root
//! --pass root memory`. Operators run the official binary or image.
#![recursion_limit = "256"]
fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
