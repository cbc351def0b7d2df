//! Recording of every MapResponse sent, for debugging and test artifacts: when
//! `HEADSCALE_DEBUG_DUMP_MAPRESPONSE_PATH` names a directory, each message is written there as
//! `<node id>-<sequence>.json` (uncompressed JSON, exactly what the node received).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::model::NodeId;

/// The environment variable naming the dump directory.
pub const DUMP_ENV: &str = "HEADSCALE_DEBUG_DUMP_MAPRESPONSE_PATH";

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);

fn dir() -> Option<&'static PathBuf> {
    DIR.get_or_init(|| {
        let d = std::env::var_os(DUMP_ENV).map(PathBuf::from)?;
        match std::fs::create_dir_all(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot create the MapResponse dump directory");
                None
            }
        }
    })
    .as_ref()
}

/// Whether messages are being recorded.
pub fn enabled() -> bool {
    dir().is_some()
}

/// Records one message sent to `node`, if recording is on.
pub fn record(node: NodeId, json: &[u8]) {
    let Some(dir) = dir() else { return };
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{node}-{seq:08}.json"));
    if let Err(e) = std::fs::write(&path, json) {
        tracing::warn!(path = %path.display(), error = %e, "cannot record a MapResponse");
    }
}
