//! One module per subcommand. Each returns an [`Exit`]; `main` maps it to the process
//! exit code.

pub mod check_config;
pub mod demo;
pub mod keys;
pub mod rotation;
pub mod serve;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use crate::app::{App, EnvLookup};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, allowed, ready.
    Ok = 0,
    /// 1: denied (verify) or a key source failed (check-config).
    Failed = 1,
    /// 2: the config or the command line is wrong, or a listener could not start.
    Usage = 2,
}

/// The process environment, read-only.
pub fn process_env() -> EnvLookup {
    Arc::new(|name: &str| std::env::var(name).ok())
}

/// Finds and parses the config, printing the error (file, field, reason) on failure.
pub fn load_config(flag: Option<PathBuf>, env: &EnvLookup) -> Result<Config, Exit> {
    let Some(path) = crate::app::config_path(flag, env) else {
        eprintln!("error: no config: pass --config FILE or set TOKENGATE_CONFIG");
        return Err(Exit::Usage);
    };
    Config::load(&path).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Usage
    })
}

/// Builds the app for a one-shot command (no listeners, no background loops) and loads
/// every key source once.
pub async fn one_shot_app(
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    env: EnvLookup,
) -> (Arc<App>, Vec<crate::app::SourceProblem>) {
    let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
    let app = App::new(
        config,
        tokio::runtime::Handle::current(),
        clock,
        Arc::new(Metrics::new()),
        env,
    );
    let mut problems = app.local_problems();
    problems.extend(app.load_remote_now().await);
    (app, problems)
}
