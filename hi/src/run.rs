//! `hi run PATTERN…`: build the binaries and the images, then run each matching scenario with
//! each chosen client (the official Go client and tailscale-rs unless `--client` narrows it)
//! in a fresh Docker world, collect its artifacts, tear it down (unless `--keep`), and end
//! with a table of scenario × client × engine.
//! Ctrl-C removes this run's containers and networks before exiting. If the server cannot run
//! on PostgreSQL (`--postgres`), the run stops at the first scenario with the server's message.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::scenario::{glob_match, skip_if_unsupported, ClientKind, Scenario, Tailnet, Verdict};
use integration::scenarios;

use crate::world::{DockerWorld, Images, PostgresUnusable};
use crate::{artifacts, docker, image, postgres};

/// `hi run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Globs over scenario names, e.g. 'PingAll*' or '*'; a scenario runs if any matches.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Leave the containers and networks running after each scenario (remove them later with
    /// `hi cleanup`).
    #[arg(long)]
    keep: bool,
    /// Run the server on PostgreSQL in its own container (its image is made from this host's
    /// PostgreSQL server installation, Debian's `postgresql` package).
    #[arg(long)]
    postgres: bool,
    /// Run only with this client (`go`: the official Go client; `rs`: tailscale-rs); may be
    /// given twice. Both by default.
    #[arg(long = "client")]
    clients: Vec<ClientKind>,
    /// Run the server from the image users get (`scripts/build-image`), as Headscale's image
    /// is run: its entry point given `serve`, a config file in its `/etc/headscale` volume.
    #[arg(long)]
    installed: bool,
    /// Build the binaries with `--release` (the default debug build shares its artifacts with
    /// `cargo build` and `cargo test`, so it is much quicker from a warm tree).
    #[arg(long)]
    release: bool,
}

/// How long one scenario may take, setup and artifacts included.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);

/// How one scenario ended.
enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

/// One scenario run with one client, and what it noted.
struct Row {
    scenario: &'static str,
    client: ClientKind,
    outcome: Outcome,
    notes: Vec<String>,
    took: Duration,
}

/// Runs the matching scenarios; the exit code is a failure if any failed.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let all = scenarios::all();
    let chosen: Vec<&Scenario> = all.iter().filter(|s| args.patterns.iter().any(|p| glob_match(p, s.name))).collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        bail!("no scenario matches {:?}; there are: {}", args.patterns, names.join(", "));
    }
    let docker = docker::connect().await?;
    let t0 = Instant::now();
    println!("building headscale and tsnode ({})", if args.release { "release" } else { "debug" });
    let release = args.release;
    let bins = tokio::task::spawn_blocking(move || image::build_binaries(release)).await??;
    let tag = image::ensure_image(&docker, &bins).await?;
    println!("image {tag} ready after {:.0?}", t0.elapsed());
    let installed = match args.installed {
        true => {
            let built = image::installed_image(&docker, &bins).await.context("building the installed image")?;
            println!("installed image {built} ready after {:.0?}", t0.elapsed());
            Some(built)
        }
        false => None,
    };
    let run_id = format!("{}-{}", chrono::Local::now().format("%H%M%S"), std::process::id());
    let pg_image = match args.postgres {
        true => {
            let pg = postgres::ensure_image(&docker, &run_id).await.context("building the PostgreSQL image")?;
            println!("PostgreSQL image {pg} ready after {:.0?}", t0.elapsed());
            Some(pg)
        }
        false => None,
    };

    let root = image::workspace_root();
    let clients = if args.clients.is_empty() { ClientKind::ALL.to_vec() } else { args.clients.clone() };
    let runs: Vec<(&Scenario, ClientKind)> =
        chosen.iter().flat_map(|s| clients.iter().map(move |c| (*s, *c))).collect();
    let engine = format!(
        "{}{}",
        if args.postgres { "postgres" } else { "sqlite" },
        if args.installed { ", installed" } else { "" }
    );
    let mut rows = Vec::new();
    for (i, (scenario, client)) in runs.iter().enumerate() {
        let started = chrono::Local::now();
        let label = format!("{}-{client}", scenario.name);
        let dir = artifacts::scenario_dir(&root, started, &label)?;
        println!(
            "== {} with {client} ({}/{}, {:.0?} so far): {}",
            scenario.name,
            i + 1,
            runs.len(),
            t0.elapsed(),
            scenario.about
        );
        let clock = Instant::now();
        let (outcome, notes) = match scenario.cannot_run_with(*client) {
            Some(why) => (Outcome::Skipped(format!("not with the {client} client: {why}")), Vec::new()),
            None => {
                let prefix = format!("hi-{run_id}-{i}");
                let images = Images { tailnet: &tag, installed: installed.as_deref(), postgres: pg_image.as_deref() };
                let world = WorldSpec { run: &run_id, prefix: &prefix, images };
                tokio::select! {
                    o = run_one(&docker, &world, scenario, *client, &dir, args.keep) => match o {
                        Ok(o) => o,
                        Err(e) => {
                            std::fs::write(dir.join("result.txt"), format!("ABORTED {label}: {e:#}\n"))?;
                            return Err(e);
                        }
                    },
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("interrupted: removing this run's containers and networks");
                        docker::cleanup(&docker, Some(&run_id), false).await?;
                        return Ok(ExitCode::from(130));
                    }
                }
            }
        };
        let took = clock.elapsed();
        let line = match &outcome {
            Outcome::Passed => format!("PASS {label} in {took:.1?}"),
            Outcome::Skipped(why) => format!("SKIP {label} in {took:.1?}: {why}"),
            Outcome::Failed(why) => format!("FAIL {label} in {took:.1?}: {why}"),
        };
        let mut report = line.clone();
        for n in &notes {
            report.push_str(&format!("\n   note: {n}"));
        }
        println!("{report}\n   artifacts: {}", dir.display());
        std::fs::write(dir.join("result.txt"), format!("{report}\n")).context("writing result.txt")?;
        rows.push(Row { scenario: scenario.name, client: *client, outcome, notes, took });
    }

    let failed = rows.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).count();
    let skipped = rows.iter().filter(|r| matches!(r.outcome, Outcome::Skipped(_))).count();
    let width = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(8) + 2;
    let engine_width = engine.len().max(8) + 2;
    println!("\n{:<width$}{:<8}{:<engine_width$}{:<6}{:>9}", "scenario", "client", "engine", "result", "seconds");
    for r in &rows {
        let (word, why) = match &r.outcome {
            Outcome::Passed => ("pass", String::new()),
            Outcome::Skipped(why) => ("skip", format!("  ({why})")),
            Outcome::Failed(_) => ("FAIL", String::new()),
        };
        let noted = if r.notes.is_empty() { String::new() } else { format!("  [{} note(s)]", r.notes.len()) };
        println!(
            "{:<width$}{:<8}{engine:<engine_width$}{word:<6}{:>9.1}{why}{noted}",
            r.scenario,
            r.client.name(),
            r.took.as_secs_f64()
        );
    }
    for client in &clients {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.client == *client).collect();
        let f = mine.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).count();
        let s = mine.iter().filter(|r| matches!(r.outcome, Outcome::Skipped(_))).count();
        println!("{client}: {} passed, {f} failed, {s} skipped", mine.len() - f - s);
    }
    println!("{} passed, {failed} failed, {skipped} skipped, in {:.0?}", rows.len() - failed - skipped, t0.elapsed());
    if args.keep {
        println!("containers kept; remove them with `cargo run -p hi -- cleanup`");
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What a scenario's world is made of.
struct WorldSpec<'a> {
    run: &'a str,
    prefix: &'a str,
    images: Images<'a>,
}

/// Runs one scenario with `client` in a fresh world, collects its artifacts and removes the
/// world; returns how it ended and what it noted. An error means no scenario can run (the
/// server cannot use PostgreSQL), so the run stops.
async fn run_one(
    docker: &bollard::Docker,
    spec: &WorldSpec<'_>,
    scenario: &Scenario,
    client: ClientKind,
    dir: &std::path::Path,
    keep: bool,
) -> Result<(Outcome, Vec<String>)> {
    let world = match DockerWorld::start(docker, spec.run, spec.prefix, spec.images, &scenario.setup).await {
        Ok(w) => Arc::new(w),
        Err(e) if e.is::<PostgresUnusable>() => return Err(e),
        Err(e) => {
            let outcome = match skip_if_unsupported(e) {
                Ok(Verdict::Skipped(why)) => Outcome::Skipped(why),
                Ok(Verdict::Passed) => Outcome::Passed,
                Err(e) => Outcome::Failed(format!("setting up: {e:#}")),
            };
            return Ok((outcome, Vec::new()));
        }
    };
    let tailnet = Tailnet::new(world.clone(), client);
    let body = async {
        match (scenario.run)(tailnet.clone()).await {
            Ok(Verdict::Passed) => tailnet.check_contained().await.map(|()| Verdict::Passed),
            other => other.or_else(skip_if_unsupported),
        }
    };
    let verdict = tokio::time::timeout(SCENARIO_TIMEOUT, body).await;
    let outcome = match verdict {
        Ok(Ok(Verdict::Passed)) => Outcome::Passed,
        Ok(Ok(Verdict::Skipped(why))) => Outcome::Skipped(why),
        Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
        Err(_) => Outcome::Failed(format!("did not finish within {SCENARIO_TIMEOUT:?}")),
    };
    if let Err(e) = artifacts::collect(&world, dir, !keep).await {
        eprintln!("collecting artifacts into {}: {e:#}", dir.display());
    }
    if !keep {
        if let Err(e) = world.remove().await {
            eprintln!("removing the containers of {}: {e:#}", scenario.name);
        }
    }
    Ok((outcome, tailnet.notes()))
}
