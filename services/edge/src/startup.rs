//! Wiring of the edge validator.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use keysilo_config::EdgeSettings;
use keysilo_coord::Coord;

use crate::feed::run_feed;
use crate::routes;
use crate::state::EdgeState;

/// A built, not yet running, edge validator.
pub struct Application {
    port: u16,
    server: Server,
    state: Arc<EdgeState>,
}

impl Application {
    /// Builds the state, starts the revocation feed and binds the listener.
    pub async fn build(settings: EdgeSettings) -> anyhow::Result<Self> {
        let coord = Coord::new(&settings.redis)?;
        let address = format!("{}:{}", settings.edge.host, settings.edge.port);
        let tls = settings
            .tls
            .as_ref()
            .map(keysilo_tls::TlsServer::load)
            .transpose()?;
        let state = EdgeState::new(settings, coord, tls.clone())?;
        tokio::spawn(run_feed(state.clone()));
        let listener = TcpListener::bind(&address)?;
        let port = listener.local_addr()?.port();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(routes::configure)
        })
        .shutdown_timeout(5);
        let server = match tls {
            Some(tls) => {
                tokio::spawn(tls.clone().watch());
                server
                    .on_connect(keep_peer_certificate(tls.client_identity()))
                    .listen_openssl(listener, tls.acceptor()?)?
            }
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The port bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests).
    pub fn state(&self) -> &Arc<EdgeState> {
        &self.state
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// actix-web's `on_connect` hook for a TLS listener: keeps the connection's
/// client certificate, if any, for handlers (`req.conn_data()`).
fn keep_peer_certificate(
    identity: keysilo_config::ClientIdentity,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |connection, extensions| {
        type Stream = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
        if let Some(stream) = connection.downcast_ref::<Stream>()
            && let Some(peer) = keysilo_tls::PeerCertificate::of_connection(stream.ssl(), identity)
        {
            extensions.insert(peer);
        }
    }
}
