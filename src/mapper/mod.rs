//! Map generation, as pure functions: from a snapshot, the map context and the policy to
//! MapResponses. `context` holds what shapes every map besides the snapshot (built once from
//! the configuration); `render` builds nodes and the first, full map of a session; `session`
//! keeps what a session has sent and turns change events into deltas.

mod context;
mod render;
mod session;

pub use context::MapContext;
pub use render::{full_map, peer_wire, self_node, TAGGED_DEVICES_USER_ID};
pub use session::SessionView;

/// Snapshots of the deltas a session sends.
#[cfg(test)]
mod tests;
