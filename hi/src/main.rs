//! `hi`: the integration runner. It runs the scenarios of `integration::scenarios` in Docker —
//! the server and one container per real Tailscale client (`tsnode`) on a private network per
//! scenario — with images it builds itself (no registry), writes each scenario's artifacts to
//! `control_logs/`, and exits non-zero if any scenario failed. `doctor` checks what this needs,
//! `cleanup` removes what a crashed run left, `list` shows the scenarios. `load` is the load
//! generator: the server on loopback under thousands of real control clients.

mod artifacts;
mod docker;
mod doctor;
mod image;
mod load;
mod postgres;
mod rootfs;
mod run;
mod world;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The load generator runs thousands of clients in this process, and their HTTP/2 and Noise
/// layers allocate a buffer per frame and per record: under glibc's malloc, whose free lists
/// its long-lived maps fragment, allocation took a quarter of the generator's CPU in a
/// reconnect storm, CPU the server under test then lacks on the same cores. It is built
/// without transparent huge pages (`no_thp`): memory it returns and takes back is faulted in
/// again, and with huge pages every such fault zeroes 2 MiB, which was 4-15% of the
/// generator's CPU in a storm.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "hi", about = "Integration runner for scenarios against real clients in Docker")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the prerequisites (engine, disk, tools, build, image, container networking) and
    /// print how to fix what is missing.
    Doctor {
        /// Skip the slow checks: building the binaries and the image, starting a server.
        #[arg(long)]
        quick: bool,
    },
    /// Run the scenarios whose names match a PATTERN (`*` and `?`, case-insensitive).
    Run(run::RunArgs),
    /// Remove every container and network `hi` created (of any run, including one in progress).
    Cleanup {
        /// Also remove the images `hi` built.
        #[arg(long)]
        images: bool,
    },
    /// List the scenarios (those matching PATTERN, if given).
    List {
        /// A glob over scenario names.
        pattern: Option<String>,
    },
    /// Start the server on loopback and drive N real control clients through registration,
    /// map sessions, a reconnect storm, endpoint fan-out and churn; print the measurements.
    Load(load::LoadArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Args::parse().command {
        Cmd::Doctor { quick } => doctor::doctor(quick).await,
        Cmd::Run(args) => run::run(args).await,
        Cmd::Cleanup { images } => cleanup(images).await,
        Cmd::List { pattern } => {
            for s in integration::scenarios::all() {
                if pattern.as_deref().is_none_or(|p| integration::scenario::glob_match(p, s.name)) {
                    println!("{:<26} {}", s.name, s.about);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Load(args) => load::run(args).await,
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("hi: {e:#}");
        ExitCode::FAILURE
    })
}

async fn cleanup(images: bool) -> anyhow::Result<ExitCode> {
    let d = docker::connect().await?;
    let removed = docker::cleanup(&d, None, images).await?;
    for r in &removed {
        println!("removed {r}");
    }
    println!("{} resources removed", removed.len());
    Ok(ExitCode::SUCCESS)
}
