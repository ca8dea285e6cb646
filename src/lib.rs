//! receptor-rs: a Rust implementation of the Receptor mesh overlay network.

pub mod accept;
pub mod backends;
pub mod base64;
pub mod certs;
pub mod config;
pub mod control;
pub mod daemon;
pub mod gotime;
pub mod hostport;
pub mod logging;
pub mod netceptor;
pub mod procstat;
pub mod random;
pub mod ratelog;
pub mod reaper;
pub mod reply;
pub mod services;
pub mod stream;
pub mod tls;
pub mod work;
pub mod workers;
