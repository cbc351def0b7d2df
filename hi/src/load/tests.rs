//! The load generator end to end at a tiny size: every phase against the server started in
//! this process (`integration::TestServer`, the CLI through the same code as the binary), so
//! the suite proves the generator works without building a release binary. CPU and memory
//! are read from this process, which holds both sides here, so only their presence is checked.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use integration::{Options, TestServer};
use url::Url;

use super::phases::{run, Plan};
use super::ControlServer;

#[async_trait]
impl ControlServer for TestServer {
    fn url(&self) -> Url {
        TestServer::url(self)
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    async fn headscale(&self, args: &[&str]) -> Result<String> {
        self.cli(args).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_runs_and_converges_at_five_nodes() {
    let server = TestServer::start(Options::default()).await.expect("the server starts");
    let plan = Plan {
        nodes: 5,
        register_concurrency: 2,
        strict_clients: 3,
        fanout_rounds: 2,
        churn_per_s: 10,
        churn_for: Duration::from_secs(1),
        timeout: Duration::from_secs(20),
    };
    let m = run(&server, &plan).await.expect("every phase completes with correct maps");
    server.running.stop().await;
    assert_eq!(m.nodes, 5);
    assert!(m.register_per_s > 0.0);
    assert_eq!(m.fanout_ms.len(), 2);
    assert_eq!(m.churn_changes, 10);
    assert!(m.json().to_string().starts_with('{'));
}
