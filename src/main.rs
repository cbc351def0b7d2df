//! The `headscale` program: `serve` runs the server here and `configtest` checks what it would
//! need; every other command runs through `cli` (a client of the admin API, or a tool that
//! needs no server).

use std::process::ExitCode;

use clap::Parser;
use headscale::cli::{self, Cli, Command};
use headscale::config::{Config, Source};
use tokio::signal::unix::{signal, SignalKind};

fn init_logging(config: &Config) {
    let level = match config.log.level.as_str() {
        "fatal" | "panic" => "error",
        "disabled" => "off",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("headscale={level},warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config, source: Source) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(&config);
    headscale::alloc::tune_for_server();
    match headscale::listen::raise_fd_limit() {
        Ok(files) => tracing::info!(
            files,
            connections = headscale::listen::connection_limit(),
            "open-file limit in force, and the connections the listeners may hold"
        ),
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
    match &source {
        Source::File(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        Source::Embedded(dir) => {
            tracing::info!(data = %dir.display(), "no config file found: running on the embedded default")
        }
    }
    // Listening before the server starts: a signal that arrives during start-up is handled,
    // never the default action (which would end the process on SIGHUP).
    let mut hangup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let running = headscale::app::start(config).await?;
    headscale::alloc::spawn_trimmer();
    loop {
        tokio::select! {
            _ = hangup.recv() => running.reload().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = quit.recv() => break,
        }
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    let (config, source) = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", cli::format_error(args.output, &format!("configuration error: {e}")));
            return ExitCode::FAILURE;
        }
    };
    match &args.command {
        Command::Serve => match serve(config, source).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("headscale serve: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Configtest => match headscale::app::check(&config) {
            Ok(notes) => {
                for note in notes {
                    println!("{note}");
                }
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", cli::format_error(args.output, &e.to_string()));
                ExitCode::FAILURE
            }
        },
        _ => match cli::run_client_command(&args, &config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                cli::report_error(&args, &e);
                ExitCode::FAILURE
            }
        },
    }
}
