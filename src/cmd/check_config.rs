//! `tokengate check-config`: parse the config, load every key source once, print the key
//! inventory; exit 2 on a config error, 1 when a key source fails, 0 otherwise.

use std::path::PathBuf;

use super::{Exit, load_config, one_shot_app};
use crate::app::EnvLookup;
use crate::keys::inventory;

/// Runs the command.
pub async fn run(config: Option<PathBuf>, env: EnvLookup) -> Exit {
    let config = match load_config(config, &env) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let file = config.file.clone();
    let (app, problems) = one_shot_app(config, None, env).await;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {}: {}: {}", file.display(), p.field, p.error);
        }
        return Exit::Failed;
    }
    println!("{}: OK", file.display());
    print!("{}", inventory::table(&app.inventory()));
    Exit::Ok
}
