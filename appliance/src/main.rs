//! The `lookout` binary: parses the command line, finds the identity, serves.

use std::process::ExitCode;

use anyhow::Context;
use lookout::app::App;
use lookout::identity_store;
use lookout::needs_provisioning::NeedsProvisioning;
use lookout::settings::Cli;

fn main() -> ExitCode {
    // Before any thread starts: media restarts must not leave freed frames
    // resident (see the module).
    lookout::allocator::tune();
    let loaded = match Cli::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(e) => e.exit(),
    };
    if loaded.cli.show_settings {
        for problem in &loaded.problems {
            eprintln!("lookout: settings file: {problem}");
        }
        print!("{}", loaded.effective);
        return ExitCode::SUCCESS;
    }
    let cli = loaded.cli;
    // Only the command line can fail here: file values that fail it were left out.
    if let Err(message) = cli.check() {
        <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    let (log_filter, source) = lookout::logging::choose_filter(cli.log.as_deref(), rust_log.as_deref());
    if let Err(e) = lookout::logging::init(&log_filter) {
        eprintln!("lookout: {e}");
        return ExitCode::from(2);
    }
    tracing::debug!(filter = %log_filter, ?source, "log filter");
    if let Some(file) = &loaded.file {
        tracing::info!(file = %file.display(), problems = loaded.problems.len(), "settings file read");
    }
    for problem in &loaded.problems {
        tracing::warn!(
            file = %problem.file.display(),
            line = problem.line,
            key = problem.key.as_deref(),
            "settings file: {}", problem.message
        );
    }
    let report = lookout::settings::SettingsFileReport { file: loaded.file, problems: loaded.problems };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lookout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, report)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("lookout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, report: lookout::settings::SettingsFileReport) -> anyhow::Result<()> {
    let mut settings = cli.settings();
    settings.settings_file = report;
    let boot_dir = settings.boot_identity_dir.as_deref();
    let (identity, origin) = match identity_store::load(&settings.state_dir, boot_dir) {
        Ok(found) => found,
        // Never a new secret over a damaged file: say so on the camera's address instead.
        Err(problem @ identity_store::IdentityStoreError::Corrupt { .. }) => {
            return NeedsProvisioning::serve(&settings, &problem, shutdown_signal())
                .await
                .context("cannot serve the needs-provisioning page");
        }
        Err(e) => return Err(e).context(format!("no usable identity in {}", settings.state_dir.display())),
    };
    let server = App::start(&settings, &identity, origin).await.context("cannot start")?;
    let addr = server.local_addr().context("cannot read the bound address")?;
    let _mdns = lookout::mdns::start_if_enabled(settings.mdns, &identity, addr.port(), server.nearby());
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
    // systemd (Type=notify, WatchdogSec=): READY=1 once the listener is bound,
    // then watchdog pings while the media supervisor's loop runs. Nothing happens when NOTIFY_SOCKET is unset.
    let notifier = lookout::sdnotify::announce_ready(&format!("serving on {addr}"), server.heartbeat());
    server.run(shutdown_signal()).await;
    if let Some(notifier) = &notifier {
        notifier.notify_stopping().ok();
    }
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
