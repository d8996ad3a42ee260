//! `runbookd serve`: the store it opens and the server it starts.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{runtime, LogFormat};

/// `--store`, parsed here rather than by clap, which would echo a bad value
/// whole (a password included).
pub(super) fn parse_store(raw: Option<String>) -> anyhow::Result<Option<crate::store::StoreUrl>> {
    raw.map(|s| s.parse().map_err(|e| anyhow::anyhow!("bad --store: {e}")))
        .transpose()
}

pub(super) fn store_url(
    store: Option<String>,
    data_dir: &Path,
) -> anyhow::Result<crate::store::StoreUrl> {
    Ok(parse_store(store)?
        .unwrap_or_else(|| crate::store::StoreUrl::Sqlite(data_dir.join("runbookd.db"))))
}

/// Opens an existing store for reading (never creates one).
pub(super) async fn open_store(
    url: &crate::store::StoreUrl,
) -> anyhow::Result<crate::store::Store> {
    if let crate::store::StoreUrl::Sqlite(db) = url {
        anyhow::ensure!(
            db.exists(),
            "no store at `{}` (set --data-dir or --store)",
            db.display()
        );
    }
    crate::store::Store::open_read_only(url)
        .await
        .with_context(|| format!("cannot open `{url}`"))
}

pub(super) fn serve(
    cfg: crate::config::ServerConfig,
    format: LogFormat,
) -> anyhow::Result<ExitCode> {
    // What the server creates (store, WAL, locks, scratch) is its own alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let announce = match format {
        LogFormat::Text => crate::server::Announce::Text,
        LogFormat::Json => crate::server::Announce::Json,
    };
    match runtime()?.block_on(crate::server::run(cfg, announce)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::server::StartError::Runbooks(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "refusing to start: {} error(s) in the runbooks",
                errors.0.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(crate::server::StartError::Slos(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "refusing to start: {} error(s) in the SLO files",
                errors.0.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(crate::server::StartError::Other(e)) => Err(e),
    }
}
