//! `kube-sim`: runs the Kubernetes API stand-in until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes API stand-in for tests (HTTPS on loopback, bearer tokens, RBAC).
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory with CustomResourceDefinition YAML files to serve.
    #[arg(long)]
    crds: Option<PathBuf>,
    /// State directory (pod logs under logs/{ns}/{pod}/{container}.log).
    #[arg(long)]
    state_dir: PathBuf,
    /// Where to write the cluster-admin kubeconfig (default: {state-dir}/kubeconfig).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Static users, as kube-apiserver's flag: a CSV file of `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Keep the cluster in the state directory across restarts, as etcd does: objects with
    /// their resourceVersions and uids (`store.jsonl`, appended on every write), the CA and
    /// serving certificate, the service-account signing key and the static users' tokens.
    /// Started again with the same `--state-dir` (and `--listen` port), clients carry on;
    /// their watches get `410 Gone` and relist.
    #[arg(long)]
    persist: bool,
    /// Also run the runner (Job, Deployment and ReplicaSet controllers + kubelet stand-in).
    #[arg(long)]
    run_jobs: bool,
    /// How the Job runner runs pod containers: `docker` (containers of the pods' images; the
    /// default, the engine must be reachable) or `process` (host processes mapped through
    /// sim/images.yaml; development only).
    #[arg(long, env = kube_sim::runner::RUNTIME_ENV, default_value = "docker")]
    container_runtime: kube_sim::runner::Runtime,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    // Every path handed to containers must be absolute, whatever directory we were started in.
    args.state_dir = match kube_sim::runner::absolute_state_dir(&args.state_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "kube-sim: refusing to listen on non-loopback address {}",
            args.listen
        );
        return std::process::ExitCode::from(2);
    }
    let opts = kube_sim::ServerOptions {
        listen: args.listen,
        crds_dir: args.crds,
        state_dir: Some(args.state_dir.clone()),
        kubeconfig_out: args.kubeconfig_out,
        token_auth_file: args.token_auth_file,
        persist: args.persist,
        ..Default::default()
    };
    let mut server = match kube_sim::Server::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let port_file = args.state_dir.join("port");
    if let Err(e) = std::fs::write(&port_file, server.addr().port().to_string()) {
        eprintln!("kube-sim: writing {}: {e}", port_file.display());
        return std::process::ExitCode::FAILURE;
    }
    println!("{}", server.addr().port());
    println!("kubeconfig: {}", server.kubeconfig_path().display());
    if args.run_jobs
        && let Err(e) = start_runner(&mut server, &args.state_dir, args.container_runtime).await
    {
        eprintln!("kube-sim: starting the Job runner: {e}");
        return std::process::ExitCode::FAILURE;
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    drop(server);
    std::process::ExitCode::SUCCESS
}

/// Runs the runner (Job, Deployment and ReplicaSet controllers + kubelet) against this server,
/// talking HTTPS like the real ones (as the cluster admin); it stops with the server.
async fn start_runner(
    server: &mut kube_sim::RunningServer,
    state_dir: &std::path::Path,
    runtime: kube_sim::runner::Runtime,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = kube_sim::runner::RunnerConfig::new(state_dir.to_path_buf())?;
    cfg.runtime = runtime;
    // Checks the engine (Docker) before returning: a missing engine fails the start loudly.
    kube_sim::runner::attach(server, cfg).await?;
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
