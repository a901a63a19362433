//! Schema migrations, embedded from the repository's `migrations/` folder.

use crate::{Store, StoreError};

refinery::embed_migrations!("../../migrations");

/// An arbitrary constant naming the advisory lock that serialises
/// migrations, so replicas starting together apply each one once.
const MIGRATION_LOCK: i64 = 0x6b65_7973_696c_6f01;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Names of the migrations applied by this run, oldest first.
    pub applied: Vec<String>,
}

impl Store {
    /// Applies every pending migration, holding a PostgreSQL advisory lock
    /// so that concurrent callers wait instead of racing.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let outcome = migrations::runner().run_async(&mut **client).await;
        // The lock is also released when the session ends, so a failed
        // unlock here cannot wedge later runs.
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = outcome.map_err(StoreError::Migration)?;
        Ok(MigrationReport {
            applied: report
                .applied_migrations()
                .iter()
                .map(|m| m.to_string())
                .collect(),
        })
    }
}
