//! What a load run measured, the human summary of it, and the one-line JSON that ends the
//! output (`register_per_s`, `storm_converged_s`, `fanout_ms`, `cpu_us_per_change_per_peer`,
//! `rss_kb_per_node`, `nodes`) for scripts and `BENCHMARKS.md`.

use serde_json::{json, Value};

use super::measure::median;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub nodes: usize,
    /// Nodes registered (connection, Noise handshake, registration) per second.
    pub register_per_s: f64,
    /// From opening every map session to every map correct.
    pub initial_converged_s: f64,
    /// From every client dropping its connection to every client reconnected with a correct map.
    pub storm_converged_s: f64,
    /// CPU time the server used during the storm.
    pub storm_server_cpu_s: f64,
    /// CPU time the load generator itself used during the storm (on the same cores).
    pub storm_generator_cpu_s: f64,
    /// Map messages each client received during the storm, on average.
    pub storm_messages_per_client: f64,
    /// Each fan-out round: from the endpoint update sent to the last peer holding it.
    pub fanout_ms: Vec<f64>,
    /// The median time the server took to answer the endpoint update itself.
    pub fanout_answered_ms: f64,
    pub churn_changes: u64,
    /// Server CPU during churn over (changes × peers per change).
    pub cpu_us_per_change_per_peer: f64,
    pub rss_empty_kb: u64,
    pub rss_loaded_kb: u64,
    pub rss_kb_per_node: f64,
    /// The server's peak resident memory over the whole run (the storm's, as a rule).
    pub rss_peak_kb: u64,
}

impl Measurements {
    fn fanout_max_ms(&self) -> f64 {
        self.fanout_ms.iter().copied().fold(0.0, f64::max)
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        [
            format!("== load: {} nodes", self.nodes),
            format!("register        {:>10.0} nodes/s", self.register_per_s),
            format!("initial maps    {:>10.2} s", self.initial_converged_s),
            format!(
                "reconnect storm {:>10.2} s   (server CPU {:.2} s, generator CPU {:.2} s, {:.1} messages per client)",
                self.storm_converged_s,
                self.storm_server_cpu_s,
                self.storm_generator_cpu_s,
                self.storm_messages_per_client
            ),
            format!(
                "fan-out         {:>10.1} ms median, {:.1} ms max (the update answered in {:.1} ms)",
                median(&self.fanout_ms),
                self.fanout_max_ms(),
                self.fanout_answered_ms
            ),
            format!(
                "churn CPU       {:>10.3} µs per change per peer ({} changes)",
                self.cpu_us_per_change_per_peer, self.churn_changes
            ),
            format!(
                "memory          {:>10.1} KiB per node (RSS {} → {} KiB; peak {} KiB)",
                self.rss_kb_per_node, self.rss_empty_kb, self.rss_loaded_kb, self.rss_peak_kb
            ),
        ]
        .join("\n")
    }

    /// The JSON line: `fanout_ms` is the median of the rounds.
    pub fn json(&self) -> Value {
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        json!({
            "register_per_s": round(self.register_per_s, 1),
            "storm_converged_s": round(self.storm_converged_s, 3),
            "fanout_ms": round(median(&self.fanout_ms), 1),
            "cpu_us_per_change_per_peer": round(self.cpu_us_per_change_per_peer, 3),
            "rss_kb_per_node": round(self.rss_kb_per_node, 1),
            "nodes": self.nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_has_exactly_the_agreed_keys() {
        let m = Measurements {
            nodes: 3,
            register_per_s: 123.456,
            initial_converged_s: 0.5,
            storm_converged_s: 1.23456,
            storm_server_cpu_s: 0.4,
            storm_generator_cpu_s: 0.3,
            storm_messages_per_client: 4.0,
            fanout_ms: vec![30.0, 10.0, 20.0],
            fanout_answered_ms: 2.0,
            churn_changes: 10,
            cpu_us_per_change_per_peer: 1.23456,
            rss_empty_kb: 1000,
            rss_loaded_kb: 1300,
            rss_kb_per_node: 100.0,
            rss_peak_kb: 5000,
        };
        let v = m.json();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cpu_us_per_change_per_peer",
                "fanout_ms",
                "nodes",
                "register_per_s",
                "rss_kb_per_node",
                "storm_converged_s"
            ]
        );
        assert_eq!(v["fanout_ms"], 20.0);
        assert_eq!(v["storm_converged_s"], 1.235);
        assert!(m.summary().contains("30.0 ms max"));
    }
}
