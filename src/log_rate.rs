//! Log lines about events a stranger can cause (refused handshakes, bad API keys, refused DERP
//! keys, connections over the limit), at most one per period per kind: a flood costs one line
//! now and then, which says how many were left out since the last.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of event, logged at most once per `period`.
#[derive(Debug)]
pub struct LogRate {
    period: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    left_out: u64,
}

impl LogRate {
    /// A kind of event logged at most once per `period`.
    pub const fn new(period: Duration) -> Self {
        LogRate { period, state: Mutex::new(State { last: None, left_out: 0 }) }
    }

    /// Whether this event may be logged now: `Some(n)` with the number of events left out
    /// since the last line, or `None` (and it is counted) when a line was written too recently.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.last.is_some_and(|last| now.duration_since(last) < self.period) {
            s.left_out += 1;
            return None;
        }
        s.last = Some(now);
        Some(std::mem::take(&mut s.left_out))
    }
}

/// How often each kind of stranger-caused event is logged.
pub const PERIOD: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_counting_the_rest() {
        let rate = LogRate::new(Duration::from_millis(50));
        assert_eq!(rate.allow(), Some(0));
        assert_eq!(rate.allow(), None);
        assert_eq!(rate.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(rate.allow(), Some(2));
    }
}
