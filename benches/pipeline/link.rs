//! Where the pod-start scenario's two sides talk: loopback, or a shaped link between two network
//! namespaces made by `registry-test/shaped-link.py` (a bandwidth limit with `tc tbf`, a one-way delay
//! of half the round trip in a forwarder between two TUN devices; TCP stays end to end). The registry
//! and the channel server run on the server side, containerd, `ctr` and the runtime install on the node.

use super::*;

/// A link profile.
pub(super) struct Profile {
    /// `loopback`, `1gbit-2ms`, ...
    pub label: String,
    /// Rate and round trip, for a shaped link.
    pub shape: Option<(&'static str, u32)>,
}

impl Profile {
    pub fn all(quick: bool) -> Vec<Profile> {
        let mut v = vec![Profile { label: "loopback".into(), shape: None }];
        for (rate, rtt) in [("1gbit", 2), ("200mbit", 20)] {
            if !quick || rate == "200mbit" {
                v.push(Profile { label: format!("{rate}-{rtt}ms"), shape: Some((rate, rtt)) });
            }
        }
        v
    }
}

/// A link in use: how to run a command on either side, and the server side's address.
pub(super) struct Link {
    name: Option<String>,
    /// The address servers listen on and clients reach them at.
    pub srv_ip: String,
}

impl Link {
    pub fn up(profile: &Profile) -> Link {
        let Some((rate, rtt)) = profile.shape else {
            return Link { name: None, srv_ip: "127.0.0.1".into() };
        };
        let name = "elbench".to_string();
        let script = root().join("registry-test/shaped-link.py");
        let _ = Command::new("python3").arg(&script).args(["down", "--name", &name]).output();
        let out = sh(Command::new("python3").arg(&script).args(["up", "--name", &name, "--rate", rate, "--rtt-ms", &rtt.to_string()]));
        let last = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("shaped-link.py up printed {out:?}: {e}"));
        Link { name: Some(name), srv_ip: v["srv_ip"].as_str().expect("srv_ip").to_string() }
    }

    fn side(&self, side: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.name {
            None => Command::new(program),
            Some(name) => {
                // nsenter changes only the network namespace: mounts (loop disks, containerd's
                // snapshots) stay shared with the benchmark.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{name}-{side}")).arg("--").arg(program);
                c
            }
        }
    }

    /// A command on the node side.
    pub fn node(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.side("node", program)
    }

    /// A command on the server side.
    pub fn srv(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.side("srv", program)
    }

    /// Bytes received by the node so far (a shaped link only).
    pub fn bytes_to_node(&self) -> Option<u64> {
        let name = self.name.as_ref()?;
        let out = sh(Command::new("python3").arg(root().join("registry-test/shaped-link.py")).args(["bytes", "--name", name]));
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default()).ok()?;
        v["to_node"].as_u64()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = Command::new("python3").arg(root().join("registry-test/shaped-link.py")).args(["down", "--name", name]).output();
        }
    }
}

/// A static file server with a deep listen queue (`python3 -m http.server` queues 5 connections, and
/// rattler opens ~20 at once: dropped ones retried after a second, which charged the install side a
/// second that was not conda's). Stopped on drop.
pub(super) struct FileServer {
    child: std::process::Child,
    /// `http://ip:port/`
    pub url: String,
}

const FILE_SERVER: &str = r#"
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
handler.func.log_message = lambda *a: None
srv = Server((sys.argv[1], 0), handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl FileServer {
    pub fn start(link: &Link, dir: &Path) -> FileServer {
        let mut child = link
            .srv("python3")
            .args(["-u", "-c", FILE_SERVER, &link.srv_ip])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("file server printed {line:?}"));
        FileServer { child, url: format!("http://{}:{port}/", link.srv_ip) }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's storage served on the server side of `link`; returns the service and `host:port`.
pub(super) fn registry_on(link: &Link, dir: &Path, data: &Path) -> (Service, String) {
    let svc = Service { dir: dir.to_path_buf() };
    let url = sh(link
        .srv("bash")
        .arg(root().join("registry-test/start-registry.sh"))
        .arg("plain")
        .arg(dir)
        .env("REGISTRY_BIND", &link.srv_ip)
        .env("REGISTRY_DATA", data));
    (svc, url.trim().trim_start_matches("http://").to_string())
}
