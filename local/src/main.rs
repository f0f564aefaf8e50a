//! `lighttech-local`: the whole API on one port, on whichever store `DATABASE_URL` names.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use lighttech::domain::password::NewPassword;
use lighttech::domain::{Email, Username};
use lighttech::service::auth::{Registration, register};
use lighttech::{ApiError, App, Config, StartOptions};
use secrecy::SecretString;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve the LightTech API locally (on whichever store DATABASE_URL names).
#[derive(Debug, Parser)]
#[command(name = "lighttech-local", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Prepare the store (create tables / run migrations), then serve.
    #[arg(long)]
    init: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a staff user who can use the admin API and /admin/. The password comes from
    /// LIGHTTECH_SUPERUSER_PASSWORD, or is asked for (twice) on the terminal.
    CreateSuperuser {
        /// The new user's username.
        #[arg(long)]
        username: String,
        /// The new user's email address.
        #[arg(long)]
        email: String,
    },
    /// Rotate the generated signing key in the data directory: the current key becomes the
    /// previous one (still accepted), a fresh key signs from the server's next start. Not for
    /// SECRET_KEY or SECRET_KEY_ARN, which are rotated where they are kept.
    RotateKey,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::CreateSuperuser {
            ref username,
            ref email,
        }) => create_superuser(args.init, username, email).await,
        Some(Command::RotateKey) => rotate_key(),
        None => run(args).await,
    };
    if let Err(error) = result {
        // `{:#}`: the whole chain of causes on one line.
        eprintln!("lighttech-local: {error:#}");
        std::process::exit(1);
    }
}

async fn start(init: bool) -> anyhow::Result<App> {
    let config = Config::from_env().context("configuration error")?;
    lighttech::telemetry::init(config.debug);
    App::start_with(
        config,
        StartOptions {
            init,
            generate_key: true,
            check_store: true,
        },
    )
    .await
    .map_err(anyhow::Error::from)
}

fn superuser_password() -> anyhow::Result<SecretString> {
    if let Ok(password) = std::env::var("LIGHTTECH_SUPERUSER_PASSWORD") {
        return Ok(SecretString::from(password));
    }
    let first = rpassword::prompt_password("Password: ")
        .context("cannot read a password (set LIGHTTECH_SUPERUSER_PASSWORD instead)")?;
    let second =
        rpassword::prompt_password("Password (again): ").context("cannot read a password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(SecretString::from(first))
}

async fn create_superuser(init: bool, username: &str, email: &str) -> anyhow::Result<()> {
    // Check what can be checked before asking for a password.
    let username = Username::parse(username).map_err(|m| anyhow!("username: {m}"))?;
    let email = Email::parse(email).map_err(|m| anyhow!("email: {m}"))?;
    let password = NewPassword::check(superuser_password()?, &username, &email)
        .map_err(|problems| anyhow!("password: {}", problems.join(" ")))?;
    let app = start(init).await?;
    let user = register(
        &app,
        Registration {
            username,
            email,
            password,
            is_staff: true,
        },
    )
    .await
    .map_err(|e| match e {
        ApiError::Validation(errors) => anyhow!(
            errors
                .as_map()
                .iter()
                .map(|(field, messages)| format!("{field}: {}", messages.join(" ")))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        ApiError::UsernameTaken => anyhow!("a user with that username already exists"),
        ApiError::EmailTaken => anyhow!("a user with that email already exists"),
        other => anyhow!("{other} ({})", other.detail()),
    })?;
    println!("superuser {} created (id {})", user.username, user.id);
    Ok(())
}

fn rotate_key() -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration error")?;
    if config.secret_key.is_some() {
        bail!(
            "SECRET_KEY is set, so the key comes from the environment: rotate it there \
             (SECRET_KEY_PREVIOUS=the current key, SECRET_KEY=a new one) and restart"
        );
    }
    if config.secret_key_arn.is_some() {
        bail!(
            "SECRET_KEY_ARN is set, so the key lives in Secrets Manager: rotate the secret \
             there (aws secretsmanager rotate-secret)"
        );
    }
    let path = config.data_dir.join("secret_key");
    let (kid, previous_kid) = lighttech::auth::key_file::rotate(&path).map_err(|e| anyhow!(e))?;
    println!("rotated the signing key in {}", path.display());
    println!("  signs from the next start: kid {kid}");
    println!("  still accepted (previous):  kid {previous_kid}; the one before it is retired");
    // A running server reads its keys only at start: it goes on signing with the old key,
    // which stays valid as the previous one, until it is restarted.
    println!(
        "restart the server to sign with the new key (a running server keeps the keys it started with)"
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let app = start(args.init).await?;
    lighttech::http::enable_docs_ui();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    lighttech_local::serve(listener, Arc::new(app), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
