//! `hi`: the integration runner. It runs the scenarios of `integration::scenarios` in Docker —
//! the server and one container per real Tailscale client on a private network per scenario,
//! each scenario with the official Go client (`gonode`) and with tailscale-rs (`tsnode`) —
//! with images it builds itself (no registry), writes each scenario's artifacts to
//! `control_logs/`, and exits non-zero if any scenario failed. `doctor` checks what this needs,
//! `cleanup` removes what a crashed run left, `list` shows the scenarios. `load` is the load
//! generator: the server on loopback under thousands of real control clients. `package`
//! installs the Debian package on a Debian host booted with systemd and walks it through a
//! deployment's life (install, start, reload, upgrade, stop, purge).

mod artifacts;
mod debian;
mod docker;
mod doctor;
mod image;
mod load;
mod package;
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
    /// Build the Debian package (`scripts/build-deb`), install it on a Debian host booted with
    /// systemd in a container, and check it through install, start with a Headscale database
    /// and official Go clients, reload, upgrade, stop and purge.
    Package(package::PackageArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Args::parse().command {
        Cmd::Doctor { quick } => doctor::doctor(quick).await,
        Cmd::Run(args) => run::run(args).await,
        Cmd::Cleanup { images } => cleanup(images).await,
        Cmd::List { pattern } => {
            let all = integration::scenarios::all();
            let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0) + 2;
            let mut shown = 0;
            for s in &all {
                if pattern.as_deref().is_none_or(|p| integration::scenario::glob_match(p, s.name)) {
                    let clients: Vec<&str> = s.clients().iter().map(|c| c.name()).collect();
                    println!("{:<width$}{:<7}{}", s.name, clients.join(","), s.about);
                    for (kind, why) in s.not_with {
                        println!("{:<width$}{:<7}not with {kind}: {why}", "", "");
                    }
                    shown += 1;
                }
            }
            println!("{shown} of {} scenarios (clients: go = the official Go client, rs = tailscale-rs)", all.len());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Load(args) => load::run(args).await,
        Cmd::Package(args) => package::run(args).await,
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
