//! `keysilo-identity bootstrap`: a demo tenant with a machine client, a
//! dashboard client and a tenant admin, for a first run. Idempotent: the
//! credentials are written once (mode 0600) and reused afterwards.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use keysilo_config::Settings;
use keysilo_coord::Coord;
use keysilo_store::Store;
use keysilo_types::TenantId;
use zeroize::Zeroizing;

use crate::metrics::Metrics;
use crate::oauth::credentials::new_secret;
use crate::oauth::registry::{NewClient, NewUser, RegistryError};
use crate::state::{Services, ServicesError};
use crate::tenants::{NewTenant, TenantError, TenantSettings};

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The tenant id is not valid.
    #[error("invalid tenant id: {0}")]
    TenantId(#[from] keysilo_types::IdError),
    /// The PostgreSQL pool could not be set up.
    #[error("cannot set up PostgreSQL")]
    Store(#[from] keysilo_store::StoreError),
    /// The Redis pool could not be set up.
    #[error("cannot set up Redis")]
    Coord(#[from] keysilo_coord::CoordError),
    /// The services could not be built (master keys, hashing).
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// The metrics registry could not be built.
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    /// Creating the tenant failed.
    #[error("cannot create the tenant")]
    Tenant(#[from] TenantError),
    /// Creating a client or the user failed.
    #[error("cannot create the tenant's clients and user")]
    Registry(#[from] RegistryError),
    /// No random secret could be made.
    #[error("cannot make a random password")]
    Random(#[from] openssl::error::ErrorStack),
    /// The saved credentials file is not JSON.
    #[error("the saved credentials are not valid JSON")]
    Saved(#[from] serde_json::Error),
    /// The tenant exists but its credentials file is gone: secrets cannot
    /// be shown twice.
    #[error(
        "tenant {0} exists but {1} is missing; its secrets cannot be recovered: \
         bootstrap another tenant id, or rotate the clients' secrets with the admin API"
    )]
    Orphaned(String, String),
    /// The credentials file could not be read or written.
    #[error("cannot use {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Creates the demo tenant and its principals, or returns the saved ones.
pub async fn bootstrap(
    settings: Settings,
    tenant: &str,
    output: &Path,
) -> Result<serde_json::Value, BootstrapError> {
    let tenant = TenantId::parse(tenant)?;
    let file_error = |source| BootstrapError::File {
        path: output.display().to_string(),
        source,
    };
    if let Ok(saved) = std::fs::read_to_string(output) {
        let saved: serde_json::Value = serde_json::from_str(&saved)?;
        if saved.get("tenant").and_then(|t| t.as_str()) == Some(tenant.as_str()) {
            return Ok(saved);
        }
    }
    let settings = Arc::new(settings);
    let store = Store::new(&settings.database)?;
    let coord = Coord::new(&settings.redis)?;
    let services = Services::build(&settings, &store, &coord, &Metrics::new()?)?;
    let registry = &services.registry;
    let demo = NewTenant::parse(tenant.as_str(), "Demo", TenantSettings::default())?;
    match services.tenants.create(demo, "bootstrap").await {
        Ok(_) => {}
        Err(TenantError::Exists) => {
            return Err(BootstrapError::Orphaned(
                tenant.to_string(),
                output.display().to_string(),
            ));
        }
        Err(err) => return Err(err.into()),
    }
    let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    let machine = NewClient::parse(
        "demo machine client",
        strings(&["client_credentials"]),
        strings(&["read", "write"]),
        strings(&["demo-api"]),
        Vec::new(),
    )?;
    let dashboard = NewClient::parse(
        "demo dashboard",
        strings(&["password", "refresh_token"]),
        strings(&["read", "admin"]),
        strings(&["demo-api"]),
        strings(&["http://localhost:3000"]),
    )?;
    let (machine, machine_secret) = registry
        .create_client(&tenant, machine, "bootstrap")
        .await?;
    let (dashboard, dashboard_secret) = registry
        .create_client(&tenant, dashboard, "bootstrap")
        .await?;
    let password = Zeroizing::new(new_secret()?);
    let admin = NewUser::parse("admin", password.clone(), strings(&["tenant-admin"]))?;
    let admin = registry.create_user(&tenant, admin, "bootstrap").await?;
    let saved = serde_json::json!({
        "tenant": tenant,
        "issuer": format!("{}/{}", settings.server.public_base_url, tenant),
        "machine_client_id": machine.id,
        "machine_client_secret": machine_secret.as_deref().map(String::as_str),
        "dashboard_client_id": dashboard.id,
        "dashboard_client_secret": dashboard_secret.as_deref().map(String::as_str),
        "username": admin.username,
        "password": password.as_str(),
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(file_error)?;
    file.write_all(saved.to_string().as_bytes())
        .map_err(file_error)?;
    Ok(saved)
}
