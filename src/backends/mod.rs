//! Backends carry whole netceptor messages between neighbours. Each
//! connection is a reader thread feeding the router and a [`Link`] the
//! router writes to (for byte streams, a writer thread behind it).
//!
//! [`Link`]: crate::netceptor::link::Link

pub mod framed;
pub mod proxy;
pub mod redial;
pub mod scope;
pub mod session;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;
