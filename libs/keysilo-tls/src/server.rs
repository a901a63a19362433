//! The listener's TLS: an OpenSSL acceptor whose certificate, key and
//! client CAs can be replaced while it runs.
//!
//! actix-web takes one `SslAcceptor` for the life of the server. Every
//! handshake, though, passes through the server-name callback (OpenSSL
//! calls it whether or not the client sent SNI), and that callback moves
//! the connection onto the `SslContext` loaded last. Contexts are built
//! whole and swapped under a lock, so a handshake sees the old material or
//! the new, never a mix; connections already open keep what they
//! negotiated. Protocol version and client-certificate mode belong to the
//! acceptor and change only with a restart.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use keysilo_config::{ClientAuth, TlsSettings, TlsVersion};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Name};

use crate::unix_of;

/// The TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The private key is readable by users other than its owner and group.
    #[error(
        "{path} is readable by others; make it readable by its owner (and group) only, \
         e.g. `chmod o-rwx {path}`"
    )]
    KeyReadableByOthers {
        /// The file.
        path: PathBuf,
    },
    /// A file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// OpenSSL refused the material (unparsable PEM, a key that does not
    /// match the certificate, …).
    #[error("{what}: {source}")]
    OpenSsl {
        /// What was being done.
        what: &'static str,
        /// OpenSSL's errors.
        #[source]
        source: openssl::error::ErrorStack,
    },
}

fn ssl(what: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> TlsError {
    move |source| TlsError::OpenSsl { what, source }
}

/// The files' bytes as read in one pass.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    cas: Vec<(PathBuf, Vec<u8>)>,
}

impl Files {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let key_meta = std::fs::metadata(&settings.key_file).map_err(|source| TlsError::Read {
            path: settings.key_file.clone(),
            source,
        })?;
        // Group read is allowed: Kubernetes makes mounted secrets readable
        // by the pod's fsGroup, and the reloader must read them in place.
        if key_meta.mode() & 0o007 != 0 {
            return Err(TlsError::KeyReadableByOthers {
                path: settings.key_file.clone(),
            });
        }
        Ok(Self {
            cert: read(&settings.cert_file)?,
            key: read(&settings.key_file)?,
            cas: settings
                .client_ca_files
                .iter()
                .map(|path| Ok((path.clone(), read(path)?)))
                .collect::<Result<_, TlsError>>()?,
        })
    }

    /// A digest of everything read, to notice changes.
    fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = openssl::sha::Sha256::new();
        for part in std::iter::once(&self.cert)
            .chain(std::iter::once(&self.key))
            .chain(self.cas.iter().map(|(_, bytes)| bytes))
        {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finish()
    }
}

/// Parsed material, ready to build contexts from.
struct Material {
    chain: Vec<X509>,
    key: PKey<Private>,
    cas: Vec<X509>,
}

impl Material {
    fn parse(settings: &TlsSettings, files: &Files) -> Result<Self, TlsError> {
        let chain = X509::stack_from_pem(&files.cert).map_err(ssl("the certificate file"))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: settings.cert_file.clone(),
            });
        }
        let key = PKey::private_key_from_pem(&files.key).map_err(ssl("the key file"))?;
        let mut cas = Vec::new();
        for (path, bytes) in &files.cas {
            let bundle = X509::stack_from_pem(bytes).map_err(ssl("a client CA bundle"))?;
            if bundle.is_empty() {
                return Err(TlsError::NoCertificate { path: path.clone() });
            }
            cas.extend(bundle);
        }
        Ok(Self { chain, key, cas })
    }

    /// An acceptor with this material and the settings' policy.
    fn acceptor(&self, settings: &TlsSettings) -> Result<SslAcceptorBuilder, TlsError> {
        // Mozilla's "intermediate" profile: ECDHE with AES-GCM or
        // ChaCha20-Poly1305 for TLS 1.2, OpenSSL's TLS 1.3 suites.
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(ssl("building the acceptor"))?;
        let min = match settings.min_version {
            TlsVersion::Tls12 => SslVersion::TLS1_2,
            _ => SslVersion::TLS1_3,
        };
        builder
            .set_min_proto_version(Some(min))
            .map_err(ssl("setting the minimum version"))?;
        let mut chain = self.chain.iter();
        if let Some(leaf) = chain.next() {
            builder
                .set_certificate(leaf)
                .map_err(ssl("the certificate"))?;
        }
        for extra in chain {
            builder
                .add_extra_chain_cert(extra.clone())
                .map_err(ssl("the certificate chain"))?;
        }
        builder
            .set_private_key(&self.key)
            .map_err(ssl("the private key"))?;
        builder
            .check_private_key()
            .map_err(ssl("the key does not match the certificate"))?;
        // Resumed sessions keep their client certificate; OpenSSL needs a
        // session id context to allow resumption when it verifies peers.
        builder
            .set_session_id_context(b"keysilo")
            .map_err(ssl("the session id context"))?;
        if !self.cas.is_empty() {
            let mut names = Stack::<X509Name>::new().map_err(ssl("the client CA list"))?;
            for ca in &self.cas {
                builder
                    .cert_store_mut()
                    .add_cert(ca.clone())
                    .map_err(ssl("a client CA"))?;
                names
                    .push(
                        ca.subject_name()
                            .to_owned()
                            .map_err(ssl("a client CA name"))?,
                    )
                    .map_err(ssl("the client CA list"))?;
            }
            builder.set_client_ca_list(names);
        }
        match settings.client_auth {
            ClientAuth::Request => {
                // Any certificate is taken; whether it verified is read
                // from the handshake's result afterwards.
                builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
            }
            ClientAuth::VerifyIfGiven => builder.set_verify(SslVerifyMode::PEER),
            ClientAuth::Require => {
                builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
            }
            _ => builder.set_verify(SslVerifyMode::NONE),
        }
        Ok(builder)
    }
}

/// What is in service: the context handshakes move to, and its dates.
struct Loaded {
    context: SslContext,
    fingerprint: [u8; 32],
    serial: String,
    server_not_after: i64,
    client_ca_not_after: Option<i64>,
}

fn load(settings: &TlsSettings, files: &Files) -> Result<Loaded, TlsError> {
    let material = Material::parse(settings, files)?;
    let leaf = material
        .chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate {
            path: settings.cert_file.clone(),
        })?;
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .map_err(ssl("the serial number"))?;
    let server_not_after = unix_of(leaf.not_after()).map_err(ssl("the expiry date"))?;
    let client_ca_not_after = material
        .cas
        .iter()
        .map(|ca| unix_of(ca.not_after()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ssl("a client CA's expiry date"))?
        .into_iter()
        .min();
    let context = material.acceptor(settings)?.build().into_context();
    Ok(Loaded {
        context,
        fingerprint: files.fingerprint(),
        serial,
        server_not_after,
        client_ca_not_after,
    })
}

/// Dates and counters of the TLS material, for metrics.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TlsStatus {
    /// Unix time the served certificate expires.
    pub server_not_after: i64,
    /// Unix time the first client CA expires, when there are any.
    pub client_ca_not_after: Option<i64>,
    /// Changes loaded since start.
    pub reloads_ok: u64,
    /// Changes refused since start.
    pub reloads_failed: u64,
}

struct Inner {
    settings: TlsSettings,
    current: RwLock<Loaded>,
    /// The fingerprint last refused, so a broken file is reported once.
    refused: Mutex<Option<[u8; 32]>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// The TLS side of a listener; cheap to clone.
#[derive(Clone)]
pub struct TlsServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert_file", &self.inner.settings.cert_file)
            .finish_non_exhaustive()
    }
}

/// What one look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed (or the change was refused already).
    Unchanged,
    /// New material is in service.
    Loaded,
    /// The files changed but cannot be used; the old material stays.
    Refused,
}

impl TlsServer {
    /// Reads and checks the files; any problem stops the start.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let files = Files::read(settings)?;
        let loaded = load(settings, &files)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                current: RwLock::new(loaded),
                refused: Mutex::new(None),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
            }),
        })
    }

    /// The acceptor for `HttpServer::listen_openssl`: every handshake moves
    /// to the context loaded last.
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, TlsError> {
        let files = Files::read(&self.inner.settings)?;
        let material = Material::parse(&self.inner.settings, &files)?;
        let mut builder = material.acceptor(&self.inner.settings)?;
        let inner = self.inner.clone();
        builder.set_servername_callback(move |ssl, _alert| {
            let context = inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .context
                .clone();
            ssl.set_ssl_context(&context)
                .map_err(|_| SniError::ALERT_FATAL)
        });
        Ok(builder)
    }

    /// Looks at the files once and loads them if they changed.
    pub fn reload(&self) -> Reload {
        let inner = &self.inner;
        let outcome = Files::read(&inner.settings).and_then(|files| {
            let fingerprint = files.fingerprint();
            let current = inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .fingerprint;
            let mut refused = inner.refused.lock().unwrap_or_else(PoisonError::into_inner);
            if fingerprint == current || *refused == Some(fingerprint) {
                return Ok(None);
            }
            match load(&inner.settings, &files) {
                Ok(loaded) => Ok(Some(loaded)),
                Err(err) => {
                    *refused = Some(fingerprint);
                    Err(err)
                }
            }
        });
        match outcome {
            Ok(None) => Reload::Unchanged,
            Ok(Some(loaded)) => {
                tracing::info!(
                    cert_file = %inner.settings.cert_file.display(),
                    serial = %loaded.serial,
                    "TLS certificate reloaded; new connections use it"
                );
                *inner
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = loaded;
                inner.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Reload::Loaded
            }
            // A file caught half-written reads as unusable too; the next
            // look finds it whole.
            Err(err) => {
                tracing::error!(
                    cert_file = %inner.settings.cert_file.display(),
                    error = %err,
                    "the TLS files changed but cannot be used; the previous certificate stays in service"
                );
                inner.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Reload::Refused
            }
        }
    }

    /// Looks at the files every `reload_interval_seconds`, for ever.
    pub async fn watch(self) {
        let period = Duration::from_secs(self.inner.settings.reload_interval_seconds.max(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let server = self.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || server.reload()).await {
                tracing::error!(error = %err, "the TLS reload task failed");
            }
        }
    }

    /// The serial number (hex) of the certificate in service.
    pub fn serial(&self) -> String {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .serial
            .clone()
    }

    /// Dates and counters, for metrics.
    pub fn status(&self) -> TlsStatus {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        TlsStatus {
            server_not_after: current.server_not_after,
            client_ca_not_after: current.client_ca_not_after,
            reloads_ok: self.inner.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.inner.reloads_failed.load(Ordering::Relaxed),
        }
    }

    /// Which part of a client certificate names the client.
    pub fn client_identity(&self) -> keysilo_config::ClientIdentity {
        self.inner.settings.client_identity
    }

    /// Whether client certificates are asked for at all.
    pub fn asks_for_client_certificates(&self) -> bool {
        self.inner.settings.client_auth != ClientAuth::None
    }
}
