//! Integration tests: the real server on a random port, a temp SQLite file,
//! real HTTP. One binary, one module per feature.
#![allow(clippy::unwrap_used)]

mod admin_api;
mod assignment;
mod attachments;
mod auth_matrix;
mod bad_input;
mod cluster;
mod concurrency;
mod console;
mod conversations;
mod dead_letters;
mod demo;
mod deploy;
mod disk_full;
mod durability;
mod expiry;
mod flow;
mod hardening;
mod helpers;
mod idempotency;
mod leases;
mod markdown;
mod metrics;
mod openai;
mod openapi;
mod postgres;
mod postgres_serve;
mod postgres_store;
mod rate_limits;
mod readme;
mod realtime;
mod recent;
mod retention;
mod search;
mod sessions;
mod socket_activation;
mod startup;
mod stop;
mod webhooks;
mod ws_client;
