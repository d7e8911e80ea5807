//! The `lookout` binary: parses the command line, finds the identity, serves.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lookout::app::App;
use lookout::identity_store;
use lookout::settings::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = lookout::logging::init(&cli.log) {
        eprintln!("lookout: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lookout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("lookout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings();
    let (identity, origin) = identity_store::load_or_create(&settings.state_dir)
        .with_context(|| format!("no usable identity in {}", settings.state_dir.display()))?;
    let server = App::start(&settings, &identity, origin).await.context("cannot start")?;
    let addr = server.local_addr().context("cannot read the bound address")?;
    tracing::info!(
        %addr,
        redirect = ?server.redirect_addr(),
        device = %identity.device_id(),
        hostname = %format!("{}.local", identity.hostname()),
        certificate_sha256 = %identity.certificate_fingerprint(),
        version = env!("CARGO_PKG_VERSION"),
        "serving HTTPS and signaling"
    );
    if lookout::banner::may_show() {
        println!("{}", lookout::banner::render(&identity, addr));
    } else {
        tracing::info!("the viewer URL with the room secret is printed only to an interactive terminal");
    }
    server.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
