//! The real server, in process, on a free loopback port.

use std::net::SocketAddr;

use tessera_domain::audit::Actor;
use tessera_server::{AppState, ServerConfig};
use tessera_store::{ChangeContext, admin_tokens};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TestDb;

pub struct TestServer {
    pub base_url: String,
    pub addr: SocketAddr,
    /// A valid admin token.
    pub admin_token: String,
    pub state: AppState,
    pub test_db: TestDb,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts the standard application over `test_db`.
    pub async fn start(test_db: TestDb, config: ServerConfig) -> TestServer {
        Self::start_with(test_db, config, |routes| routes).await
    }

    /// Starts with extra routes (e.g. a handler that panics) added before the middleware.
    pub async fn start_with(
        test_db: TestDb,
        config: ServerConfig,
        extend: impl FnOnce(axum::Router<AppState>) -> axum::Router<AppState>,
    ) -> TestServer {
        let db = test_db.db.clone();
        let mut tx = db.begin().await.expect("begin");
        let (_, admin_token) =
            admin_tokens::create(&mut tx, &ChangeContext::new(Actor::cli()), "test")
                .await
                .expect("admin token");
        tx.commit().await.expect("commit");

        let (state, writer) = AppState::new(db, config);
        let app = tessera_server::with_middleware(extend(tessera_server::routes()), state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stop_rx) = watch::channel(false);
        let writer = tokio::spawn(writer.run(stop_rx.clone()));
        let mut server_stop = stop_rx;
        let server = tokio::spawn(async move {
            tessera_server::serve(listener, app, async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            base_url: format!("http://{addr}"),
            addr,
            admin_token,
            state,
            test_db,
            stop,
            server: Some(server),
            writer: Some(writer),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops serving, then flushes the request log: afterwards every log row is in the store.
    pub async fn stop(mut self) -> TestDb {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
        if let Some(writer) = self.writer.take() {
            writer.await.expect("writer task");
        }
        self.test_db
    }
}
