//! The Docker engine through bollard: the few operations `hi` needs, each labelled with the
//! run it belongs to so that `hi cleanup` can find whatever a crashed run left behind.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, ExecConfig, HostConfig, Ipam, IpamConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;

/// The label every container and network of a run carries; its value is the run id.
pub const RUN_LABEL: &str = "hi.run";
/// The label of the images `hi` builds.
pub const IMAGE_LABEL: &str = "hi.image";

/// Connects to the local engine and agrees on an API version it supports.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("connecting to the Docker engine")?;
    let docker = docker.negotiate_version().await.context("asking the Docker engine for its API version")?;
    docker.ping().await.context("the Docker engine does not answer")?;
    Ok(docker)
}

/// A network of one scenario: its name and subnet.
#[derive(Debug, Clone)]
pub struct Network {
    /// The network's name (also the scenario's resource prefix).
    pub name: String,
    /// Its IPv4 subnet.
    pub subnet: Ipv4Net,
}

impl Network {
    /// The `n`-th host address of the subnet (the gateway is usually the first).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + n)
    }
}

/// Creates a bridge network with a subnet the engine chose, but declared explicitly, so that
/// containers can be given fixed addresses (the engine allows that only on declared subnets).
/// The engine picks a free subnet for a throw-away network; the real one is created with it.
pub async fn create_network(docker: &Docker, name: &str, run: &str) -> Result<Network> {
    let labels = HashMap::from([(RUN_LABEL.to_string(), run.to_string())]);
    let mut last_err = None;
    for _ in 0..5 {
        let probe = NetworkCreateRequest { name: name.to_string(), labels: Some(labels.clone()), ..Default::default() };
        docker.create_network(probe).await.with_context(|| format!("creating network {name}"))?;
        let info = docker.inspect_network(name, None).await.with_context(|| format!("inspecting network {name}"))?;
        docker.remove_network(name).await.with_context(|| format!("removing network {name}"))?;
        let config = info
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| Some((c.subnet?.parse::<Ipv4Net>().ok()?, c.gateway))))
            .with_context(|| format!("the engine gave network {name} no IPv4 subnet"))?;
        let (subnet, gateway) = config;
        let gateway = match gateway.and_then(|g| g.parse().ok()) {
            Some(g) => g,
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        let ipam = Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(gateway.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let real = NetworkCreateRequest {
            name: name.to_string(),
            labels: Some(labels.clone()),
            ipam: Some(ipam),
            ..Default::default()
        };
        match docker.create_network(real).await {
            Ok(_) => return Ok(Network { name: name.to_string(), subnet }),
            // Another network took the subnet in the meantime: ask again.
            Err(e) => last_err = Some(e),
        }
    }
    bail!("cannot create network {name}: {}", last_err.map(|e| e.to_string()).unwrap_or_default())
}

/// What a container runs and where.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The container name, also its hostname.
    pub name: String,
    /// The image tag.
    pub image: String,
    /// The command (the images have no entry point).
    pub cmd: Vec<String>,
    /// `NAME=value` environment entries.
    pub env: Vec<String>,
    /// The one network it is on ("none" for no network).
    pub network: String,
    /// A fixed address on the network; the engine picks one when `None`.
    pub ip: Option<Ipv4Addr>,
    /// Kernel settings of the container's network namespace.
    pub sysctls: HashMap<String, String>,
    /// The role, stored as the `hi.role` label.
    pub role: String,
    /// The user it runs as; the image's (root) when `None`.
    pub user: Option<String>,
    /// Paths mounted as empty in-memory file systems.
    pub tmpfs: Vec<String>,
    /// Host paths mounted into it (`HOST:CONTAINER[:ro]`).
    pub binds: Vec<String>,
}

/// Creates a container (not started), labelled with the run.
pub async fn create_container(docker: &Docker, run: &str, spec: &ContainerSpec) -> Result<()> {
    let endpoint = EndpointSettings {
        ipam_config: spec.ip.map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.cmd.clone()),
        env: Some(spec.env.clone()),
        hostname: Some(spec.name.clone()),
        user: spec.user.clone(),
        labels: Some(HashMap::from([
            (RUN_LABEL.to_string(), run.to_string()),
            ("hi.role".to_string(), spec.role.clone()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone()),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.iter().map(|p| (p.clone(), String::new())).collect()),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ..Default::default()
        }),
        networking_config: (spec.network != "none")
            .then(|| NetworkingConfig { endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])) }),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&spec.name).build()), body)
        .await
        .with_context(|| format!("creating container {}", spec.name))?;
    Ok(())
}

/// Starts a created container.
pub async fn start(docker: &Docker, name: &str) -> Result<()> {
    docker.start_container(name, None).await.with_context(|| format!("starting container {name}"))
}

/// Stops a container, giving it `grace` to exit after SIGTERM.
pub async fn stop(docker: &Docker, name: &str, grace: Duration) -> Result<()> {
    let opts = StopContainerOptionsBuilder::new().t(grace.as_secs() as i32).build();
    docker.stop_container(name, Some(opts)).await.with_context(|| format!("stopping container {name}"))
}

/// Kills a container's processes with SIGKILL (as a crash or the OOM killer would).
pub async fn kill(docker: &Docker, name: &str) -> Result<()> {
    let opts = bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    docker.kill_container(name, Some(opts)).await.with_context(|| format!("killing container {name}"))?;
    wait_exit(docker, name).await.map(|_| ())
}

/// Restarts a container, giving it `grace` to exit after SIGTERM.
pub async fn restart(docker: &Docker, name: &str, grace: Duration) -> Result<()> {
    let opts = RestartContainerOptionsBuilder::new().t(grace.as_secs() as i32).build();
    docker.restart_container(name, Some(opts)).await.with_context(|| format!("restarting container {name}"))
}

/// Waits until a container exits and returns its exit code.
pub async fn wait_exit(docker: &Docker, name: &str) -> Result<i64> {
    let mut stream = docker.wait_container(name, None);
    match stream.try_next().await {
        Ok(Some(r)) => Ok(r.status_code),
        Ok(None) => bail!("the engine stopped reporting on {name}"),
        // The engine reports a non-zero exit as an error carrying the code.
        Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => Ok(code),
        Err(e) => Err(e).with_context(|| format!("waiting for {name}")),
    }
}

/// Whether a container is running, and its exit code when it is not.
pub async fn state(docker: &Docker, name: &str) -> Result<(bool, Option<i64>)> {
    let info = docker.inspect_container(name, None).await.with_context(|| format!("inspecting container {name}"))?;
    let st = info.state.unwrap_or_default();
    Ok((st.running.unwrap_or(false), st.exit_code))
}

/// The container's address on `network`.
pub async fn address(docker: &Docker, name: &str, network: &str) -> Result<Ipv4Addr> {
    let info = docker.inspect_container(name, None).await.with_context(|| format!("inspecting container {name}"))?;
    info.network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("container {name} has no address on {network}"))
}

/// Cuts a container off a network.
pub async fn disconnect(docker: &Docker, network: &str, container: &str) -> Result<()> {
    let req = NetworkDisconnectRequest { container: container.to_string(), force: Some(true) };
    docker.disconnect_network(network, req).await.with_context(|| format!("disconnecting {container} from {network}"))
}

/// Connects a container to a network again, at `ip`.
pub async fn connect_at(docker: &Docker, network: &str, container: &str, ip: Ipv4Addr) -> Result<()> {
    let req = NetworkConnectRequest {
        container: container.to_string(),
        endpoint_config: Some(EndpointSettings {
            ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
            ..Default::default()
        }),
    };
    docker.connect_network(network, req).await.with_context(|| format!("connecting {container} to {network} at {ip}"))
}

/// What a command run in a container printed, and how it exited.
pub struct ExecOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The exit code (-1 when the engine did not report one).
    pub exit_code: i64,
}

/// Runs a command in a running container (as `user`, or the container's user) and waits for it.
pub async fn exec(docker: &Docker, container: &str, user: Option<&str>, cmd: &[&str]) -> Result<ExecOutput> {
    let config = ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        user: user.map(str::to_string),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let what = || format!("running `{}` in {container}", cmd.join(" "));
    let id = docker.create_exec(container, config).await.with_context(what)?.id;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&id, None).await.with_context(what)?
    {
        while let Some(chunk) = output.try_next().await.with_context(what)? {
            match chunk {
                bollard::container::LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                other => stdout.extend_from_slice(&other.into_bytes()),
            }
        }
    }
    let exit_code = docker.inspect_exec(&id).await.with_context(what)?.exit_code.unwrap_or(-1);
    Ok(ExecOutput {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit_code,
    })
}

/// A container's whole log (standard output and error, with timestamps).
pub async fn logs(docker: &Docker, name: &str) -> Result<Vec<u8>> {
    let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).timestamps(true).build();
    let mut out = Vec::new();
    let mut stream = docker.logs(name, Some(opts));
    while let Some(chunk) = stream.try_next().await.with_context(|| format!("reading the log of {name}"))? {
        out.extend_from_slice(&chunk.into_bytes());
    }
    Ok(out)
}

/// Copies a path out of a container, as a tar archive; `None` if it does not exist.
pub async fn download(docker: &Docker, name: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let opts = DownloadFromContainerOptionsBuilder::new().path(path).build();
    let mut out = Vec::new();
    let mut stream = docker.download_from_container(name, Some(opts));
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            Ok(None) => return Ok(Some(out)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("copying {path} out of {name}")),
        }
    }
}

/// Puts one file into a (possibly not yet started) container.
pub async fn upload_file(docker: &Docker, name: &str, dir: &str, file: &str, content: &[u8]) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, file, content)?;
    let bytes = tar.into_inner()?;
    let opts = UploadToContainerOptionsBuilder::new().path(dir).build();
    docker
        .upload_to_container(name, Some(opts), bollard::body_full(bytes.into()))
        .await
        .with_context(|| format!("copying {file} into {name}:{dir}"))
}

/// Removes a container and its anonymous volumes, running or not.
pub async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    docker.remove_container(name, Some(opts)).await.with_context(|| format!("removing container {name}"))
}

fn label_filter(label: &str) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([("label", vec![label.to_string()])])
}

/// Removes every container and network labelled by `hi` (of any run, or of `run` only), and
/// with `images` also its images. Returns what it removed.
pub async fn cleanup(docker: &Docker, run: Option<&str>, images: bool) -> Result<Vec<String>> {
    let label = match run {
        Some(r) => format!("{RUN_LABEL}={r}"),
        None => RUN_LABEL.to_string(),
    };
    let mut removed = Vec::new();
    let opts = ListContainersOptionsBuilder::new().all(true).filters(&label_filter(&label)).build();
    for c in docker.list_containers(Some(opts)).await.context("listing containers")? {
        let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_default();
        let name = name.trim_start_matches('/').to_string();
        remove_container(docker, &name).await?;
        removed.push(format!("container {name}"));
    }
    let opts = ListNetworksOptionsBuilder::new().filters(&label_filter(&label)).build();
    for n in docker.list_networks(Some(opts)).await.context("listing networks")? {
        let name = n.name.unwrap_or_default();
        docker.remove_network(&name).await.with_context(|| format!("removing network {name}"))?;
        removed.push(format!("network {name}"));
    }
    if images {
        for tag in image_tags(docker).await? {
            remove_image(docker, &tag, true).await?;
            removed.push(format!("image {tag}"));
        }
    }
    Ok(removed)
}

/// The tags of every image `hi` built.
pub async fn image_tags(docker: &Docker) -> Result<Vec<String>> {
    let opts = ListImagesOptionsBuilder::new().filters(&label_filter(IMAGE_LABEL)).build();
    let images = docker.list_images(Some(opts)).await.context("listing images")?;
    Ok(images.into_iter().flat_map(|i| i.repo_tags).collect())
}

/// Removes an image by tag; without `force`, an image that containers use stays.
pub async fn remove_image(docker: &Docker, tag: &str, force: bool) -> Result<()> {
    let opts = RemoveImageOptionsBuilder::new().force(force).build();
    docker.remove_image(tag, Some(opts), None).await.with_context(|| format!("removing image {tag}"))?;
    Ok(())
}

/// Imports a root file system archive as `repository:tag`, labelled as `hi`'s, with
/// Dockerfile-style `changes` (`ENV …`, `CMD …`).
pub async fn import_archive(
    docker: &Docker,
    repository: &str,
    tag: &str,
    archive: Vec<u8>,
    changes: &[&str],
) -> Result<()> {
    let mut all = vec![format!("LABEL {IMAGE_LABEL}=true")];
    all.extend(changes.iter().map(|c| c.to_string()));
    let opts = CreateImageOptionsBuilder::new().from_src("-").repo(repository).tag(tag).changes(all).build();
    let full = format!("{repository}:{tag}");
    let mut progress = docker.create_image(Some(opts), Some(bollard::body_full(archive.into())), None);
    while progress.try_next().await.with_context(|| format!("importing {full}"))?.is_some() {}
    if docker.inspect_image(&full).await.is_err() {
        bail!("docker import finished but {full} does not exist");
    }
    Ok(())
}
