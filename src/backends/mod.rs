//! Backends carry whole netceptor messages between neighbours. Each session
//! is a reader thread and a writer thread around the router's channels.

pub mod session;
pub mod sink;
pub mod tcp;
