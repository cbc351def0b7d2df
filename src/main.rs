//! The `headscale` program: `serve` and `configtest` run the server here; every other
//! command is a client of the running server (see `cli`).

use std::process::ExitCode;

use clap::Parser;
use headscale::cli::{self, Cli, Command};
use headscale::config::{Config, Source};

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
    match &source {
        Source::File(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        Source::Embedded(dir) => {
            tracing::info!(data = %dir.display(), "no config file found: running on the embedded default")
        }
    }
    let running = headscale::app::start(config).await?;
    headscale::alloc::spawn_trimmer();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
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
