//! Map generation, as pure functions: from a snapshot, the map context and the policy to
//! MapResponses. `full` builds the first message of a session; `session` keeps what a
//! session has sent and turns change events into deltas.

mod render;
mod session;

pub use render::{full_map, peer_wire, self_node, MapContext, TAGGED_DEVICES_USER_ID};
pub use session::SessionView;
