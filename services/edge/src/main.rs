//! `keysilo-edge`: the data-plane gate. For now it serves only its health
//! endpoint; token validation arrives with the edge validator capability.

use std::process::ExitCode;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;

/// Keysilo edge validator.
#[derive(Debug, Parser)]
#[command(name = "keysilo-edge", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "KEYSILO_EDGE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
}

async fn get_healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = keysilo_telemetry::Options {
        filter: "info".into(),
        json: true,
        otlp_endpoint: None,
        service_name: "keysilo-edge".into(),
    };
    let _guard = match keysilo_telemetry::init(&options, std::io::stdout) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("keysilo-edge: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = actix_web::rt::System::new().block_on(async {
        HttpServer::new(|| App::new().route("/healthz", web::get().to(get_healthz)))
            .bind(&cli.listen)?
            .run()
            .await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keysilo-edge: cannot serve on {}: {err}", cli.listen);
            ExitCode::FAILURE
        }
    }
}
