//! `keytally-sandbox`: runs the sandbox management server until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "keytally-sandbox", version, about = "A local management server for keytally")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// SQLite file for the server's data (default: in memory).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Lifetime of OAuth2 access tokens, in seconds.
    #[arg(long, default_value_t = 300)]
    token_lifetime: u64,
    /// OAuth2 client id.
    #[arg(long, default_value = "keytally")]
    client_id: String,
    /// OAuth2 client secret (env KEYTALLY_SANDBOX_CLIENT_SECRET).
    #[arg(long, env = "KEYTALLY_SANDBOX_CLIENT_SECRET", default_value = "sandbox-client-secret", hide_env_values = true)]
    client_secret: String,
    /// Admin bearer token (env KEYTALLY_SANDBOX_ADMIN_TOKEN).
    #[arg(long, env = "KEYTALLY_SANDBOX_ADMIN_TOKEN", default_value = "sandbox-admin-token", hide_env_values = true)]
    admin_token: String,
    /// The initial machine token (for YubiEnterprise-style rotation).
    #[arg(long, env = "KEYTALLY_SANDBOX_MACHINE_TOKEN", hide_env_values = true)]
    machine_token: Option<String>,
    /// Answer GET /devices with a bare array (Appterix shape).
    #[arg(long)]
    bare_list: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let a = Args::parse();
    let cfg = keytally_sandbox::Config {
        db: a.db,
        bind: a.listen,
        token_lifetime: Duration::from_secs(a.token_lifetime),
        account_key: "sandbox".into(),
        admin_token: a.admin_token,
        clients: vec![(a.client_id, a.client_secret)],
        machine_token: a.machine_token,
        bare_list: a.bare_list,
    };
    let sb = keytally_sandbox::spawn(cfg).await?;
    eprintln!("keytally-sandbox listening on {}", sb.url());
    eprintln!("  devices API: {}", sb.devices_base());
    eprintln!("  token URL:   {}", sb.token_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
