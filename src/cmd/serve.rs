//! `tokengate serve`: the sidecar. Starts every configured listener, keeps key sources
//! fresh in the background, refreshes on SIGHUP, drains and exits 0 on SIGTERM/SIGINT.
//! A key source that cannot be loaded leaves the process up and not ready, retrying.

use std::sync::Arc;

use super::Exit;
use crate::app::{App, EnvLookup};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server;

/// Runs the command on its loaded config (`main` loads it before logging starts: see
/// `telemetry`).
pub async fn run(config: Config, env: EnvLookup) -> Exit {
    match start(config, env) {
        Ok((app, listeners)) => {
            wait_for_signals(&app).await;
            listeners.stop().await;
            tracing::info!("stopped");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    }
}

/// Builds the app, starts background refresh and the listeners.
pub fn start(config: Config, env: EnvLookup) -> Result<(Arc<App>, server::Listeners), String> {
    let app = App::new(
        config,
        tokio::runtime::Handle::current(),
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
        env,
    );
    app.start_background();
    let listeners = server::start(&app)?;
    Ok((app, listeners))
}

/// Serves SIGHUP (refresh) until SIGTERM or SIGINT.
pub async fn wait_for_signals(app: &Arc<App>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; waiting for ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: refreshing keys and config");
                // Fire and forget: the results are logged, the signal loop goes on.
                let app = app.clone();
                tokio::spawn(async move {
                    let report = app.refresh_now().await;
                    for s in &report.sources {
                        match &s.error {
                            Some(error) => tracing::warn!(issuer = %s.issuer, source = s.source, field = %s.field, result = s.result.label(), %error, "SIGHUP refresh"),
                            None => tracing::info!(issuer = %s.issuer, source = s.source, field = %s.field, result = s.result.label(), keys = s.keys, "SIGHUP refresh"),
                        }
                    }
                });
            }
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); return; }
        }
    }
}
