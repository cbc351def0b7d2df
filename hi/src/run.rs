//! `hi run PATTERN…`: build the binaries and the images, then run each matching scenario in a
//! fresh Docker world, collect its artifacts, tear it down (unless `--keep`), and report.
//! Ctrl-C removes this run's containers and networks before exiting. If the server cannot run
//! on PostgreSQL (`--postgres`), the run stops at the first scenario with the server's message.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::scenario::{glob_match, skip_if_unsupported, Scenario, Tailnet, Verdict};
use integration::scenarios;

use crate::world::{DockerWorld, PostgresUnusable};
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

/// Runs the matching scenarios; the exit code is a failure if any failed.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let all = scenarios::all();
    let chosen: Vec<&Scenario> =
        all.iter().filter(|s| args.patterns.iter().any(|p| glob_match(p, s.name))).collect();
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
    let mut results = Vec::new();
    for (i, scenario) in chosen.iter().enumerate() {
        let started = chrono::Local::now();
        let dir = artifacts::scenario_dir(&root, started, scenario.name)?;
        println!("== {} ({}/{}): {}", scenario.name, i + 1, chosen.len(), scenario.about);
        let prefix = format!("hi-{run_id}-{i}");
        let clock = Instant::now();
        let world = WorldSpec { run: &run_id, prefix: &prefix, image: &tag, postgres: pg_image.as_deref() };
        let outcome = tokio::select! {
            o = run_one(&docker, &world, scenario, &dir, args.keep) => match o {
                Ok(o) => o,
                Err(e) => {
                    std::fs::write(dir.join("result.txt"), format!("ABORTED {}: {e:#}\n", scenario.name))?;
                    return Err(e);
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: removing this run's containers and networks");
                docker::cleanup(&docker, Some(&run_id), false).await?;
                return Ok(ExitCode::from(130));
            }
        };
        let took = clock.elapsed();
        let line = match &outcome {
            Outcome::Passed => format!("PASS {} in {took:.1?}", scenario.name),
            Outcome::Skipped(why) => format!("SKIP {} in {took:.1?}: {why}", scenario.name),
            Outcome::Failed(why) => format!("FAIL {} in {took:.1?}: {why}", scenario.name),
        };
        println!("{line}\n   artifacts: {}", dir.display());
        std::fs::write(dir.join("result.txt"), format!("{line}\n")).context("writing result.txt")?;
        results.push((scenario.name, outcome, took));
    }

    let failed = results.iter().filter(|r| matches!(r.1, Outcome::Failed(_))).count();
    let skipped = results.iter().filter(|r| matches!(r.1, Outcome::Skipped(_))).count();
    println!(
        "\n{} passed, {failed} failed, {skipped} skipped, in {:.0?}",
        results.len() - failed - skipped,
        t0.elapsed()
    );
    for (name, outcome, took) in &results {
        let word = match outcome {
            Outcome::Passed => "pass",
            Outcome::Skipped(_) => "skip",
            Outcome::Failed(_) => "FAIL",
        };
        println!("  {word:<5}{name:<26}{took:>8.1?}");
    }
    if args.keep {
        println!("containers kept; remove them with `cargo run -p hi -- cleanup`");
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What a scenario's world is made of.
struct WorldSpec<'a> {
    run: &'a str,
    prefix: &'a str,
    image: &'a str,
    postgres: Option<&'a str>,
}

/// Runs one scenario in a fresh world, collects its artifacts and removes the world. An error
/// means no scenario can run (the server cannot use PostgreSQL), so the run stops.
async fn run_one(
    docker: &bollard::Docker,
    spec: &WorldSpec<'_>,
    scenario: &Scenario,
    dir: &std::path::Path,
    keep: bool,
) -> Result<Outcome> {
    let world = match DockerWorld::start(docker, spec.run, spec.prefix, spec.image, &scenario.setup, spec.postgres).await {
        Ok(w) => Arc::new(w),
        Err(e) if e.is::<PostgresUnusable>() => return Err(e),
        Err(e) => {
            return Ok(match skip_if_unsupported(e) {
                Ok(Verdict::Skipped(why)) => Outcome::Skipped(why),
                Ok(Verdict::Passed) => Outcome::Passed,
                Err(e) => Outcome::Failed(format!("setting up: {e:#}")),
            });
        }
    };
    let verdict = tokio::time::timeout(SCENARIO_TIMEOUT, (scenario.run)(Tailnet::new(world.clone()))).await;
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
    Ok(outcome)
}
