//! Pods made of real kernel parts: one network namespace per "pod" (`ip netns`), a veth pair
//! into a bridge in the test's namespace, an address and a default route. Processes run in a
//! pod through `ip netns exec`, optionally as another uid (`setpriv`). Needs root and iproute2.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A bridge and the pods on it; everything is deleted on drop.
pub struct Network {
    bridge: String,
    prefix: String,
    subnet: u8,
    pods: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Network {
    /// A bridge with address 10.`subnet`.0.1/24 (unique per test process and call).
    pub fn new() -> Network {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("fy{}{n}", std::process::id() % 10000);
        let subnet = 200 + (std::process::id() % 40) as u8 + n as u8;
        let bridge = format!("{prefix}br");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        Network {
            bridge,
            prefix,
            subnet,
            pods: Vec::new(),
        }
    }

    /// A new pod with address 10.`subnet`.0.`host`; returns its namespace name and address.
    pub fn pod(&mut self, host: u8) -> Pod {
        let name = format!("{}p{host}", self.prefix);
        let (outside, inside) = (format!("{name}o"), format!("{name}i"));
        let address = Ipv4Addr::new(10, self.subnet, 0, host);
        ip(&["netns", "add", &name]);
        self.pods.push(name.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&["link", "set", &inside, "netns", &name]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("{address}/24"), "dev", &inside]);
        exec(&["link", "set", &inside, "up"]);
        exec(&["link", "set", "lo", "up"]);
        let gateway = format!("10.{}.0.1", self.subnet);
        exec(&["route", "add", "default", "via", &gateway]);
        Pod { name, address }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", pod]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

pub struct Pod {
    pub name: String,
    pub address: Ipv4Addr,
}

impl Pod {
    /// `program args` inside this pod, as root.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `program args` inside this pod as `uid`:`uid` (the sidecar's identity).
    pub fn command_as(&self, uid: u32, program: &str) -> Command {
        let mut command = Command::new("ip");
        let id = uid.to_string();
        command.args(["netns", "exec", &self.name, "setpriv"]);
        command.args([
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "--",
            program,
        ]);
        command
    }

    /// Runs to completion; stdout, or stderr as the error.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run in pod");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
