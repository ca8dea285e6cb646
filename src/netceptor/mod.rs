//! The mesh: message codec, node-name hashing, routing, and the router
//! thread that owns all mesh state.

pub mod addr;
pub mod codec;
pub mod firewall;
pub mod hash;
pub mod link;
pub mod names;
pub mod node;
pub mod ping;
pub mod router;
pub mod routing;

pub use router::{Delivery, Netceptor, PacketConn, RouteAnswer};
