//! Revoked keys: the config's `revoked.kids` and `revoked.thumbprints`, plus the
//! `revoked.file`, merged into one [`RevokedSet`]. A revoked key is never tried.

use std::path::Path;

use super::files::read_limited;
use super::{RevokedSet, SourceError};
use crate::config::RevokedConfig;
use crate::config::raw::RawRevokedFile;

/// Builds the revocation set from the config lists and, if set, the file.
pub fn load(cfg: &RevokedConfig) -> Result<RevokedSet, SourceError> {
    let mut set = RevokedSet {
        kids: cfg.kids.iter().cloned().collect(),
        thumbprints: cfg.thumbprints.iter().cloned().collect(),
    };
    if let Some(path) = &cfg.file {
        let file = read_file(path)?;
        set.kids.extend(file.kids);
        set.thumbprints.extend(file.thumbprints);
    }
    Ok(set)
}

fn read_file(path: &Path) -> Result<RawRevokedFile, SourceError> {
    let bytes = read_limited(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        SourceError::Invalid(format!(
            "{}: expected {{\"kids\": [...], \"thumbprints\": [...]}}: {e}",
            path.display()
        ))
    })
}
