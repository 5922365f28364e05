//! The pod's init step (`ferry sidecar-init`). Writes nat-table rules in the pod's network
//! namespace so its TCP traffic goes through the sidecar, as Istio's istio-init does:
//! outbound to the sidecar's outbound port, inbound to its inbound port, the proxy's own
//! traffic (its uid/gid) and loopback left alone, excluded ports and ranges honoured.
//!
//! iptables (the `iptables-restore` of the image; nf_tables or legacy, whichever it is) was
//! chosen over nftables: it is what istio-init and most CNIs use, works on every kernel a
//! cluster runs, and a rule set in restore format applies atomically.

use std::io::Write;
use std::process::{Command, Stdio};

/// What the rules redirect and leave alone (the flags of `ferry sidecar-init`).
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Port the sidecar takes captured outbound connections on.
    pub outbound_port: u16,
    /// Port the sidecar takes captured inbound connections on.
    pub inbound_port: u16,
    /// The sidecar's status port (probes, metrics): never captured.
    pub status_port: u16,
    /// The sidecar's uid and gid: its own connections are never captured (no loops).
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Comma-separated lists, as Istio's traffic annotations write them.
    pub exclude_outbound_ports: String,
    pub exclude_inbound_ports: String,
    pub exclude_outbound_ip_ranges: String,
    /// `*` for all.
    pub include_outbound_ip_ranges: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            outbound_port: 15001,
            inbound_port: 15006,
            status_port: 15020,
            proxy_uid: 1337,
            proxy_gid: 1337,
            exclude_outbound_ports: String::new(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ip_ranges: String::new(),
            include_outbound_ip_ranges: "*".into(),
        }
    }
}

const INBOUND: &str = "FERRY_INBOUND";
const INBOUND_REDIRECT: &str = "FERRY_IN_REDIRECT";
const OUTPUT: &str = "FERRY_OUTPUT";
const REDIRECT: &str = "FERRY_REDIRECT";

/// The jumps from the built-in chains into ours: deleted before the chains are rewritten, so
/// running the step twice leaves one copy.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND), ("OUTPUT", OUTPUT)];

/// Applies the rules (or only prints them, `dry_run`).
pub fn run(args: &InitOptions, dry_run: bool) -> anyhow::Result<()> {
    let rules = rules(args)?;
    if dry_run {
        print!("{rules}");
        return Ok(());
    }
    for (chain, target) in JUMPS {
        // `-D` fails once no copy is left: that ends the loop.
        while iptables(&["-t", "nat", "-D", chain, "-p", "tcp", "-j", target]).is_ok() {}
    }
    restore(&rules)?;
    println!(
        "ferry sidecar-init: traffic captured (inbound -> {}, outbound -> {})",
        args.inbound_port, args.outbound_port
    );
    Ok(())
}

/// The nat table rules in `iptables-restore --noflush` format. Declaring our chains empties
/// them; the built-in chains only gain the two jumps.
pub fn rules(args: &InitOptions) -> anyhow::Result<String> {
    let exclude_outbound_ranges = cidrs(&args.exclude_outbound_ip_ranges)?;
    let include_outbound_ranges = cidrs(&args.include_outbound_ip_ranges)?;
    let mut out = vec![
        "*nat".to_string(),
        format!(":{INBOUND} - [0:0]"),
        format!(":{INBOUND_REDIRECT} - [0:0]"),
        format!(":{OUTPUT} - [0:0]"),
        format!(":{REDIRECT} - [0:0]"),
        format!(
            "-A {INBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            args.inbound_port
        ),
        format!(
            "-A {REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            args.outbound_port
        ),
    ];
    // Inbound: every TCP port but the excluded ones (and the sidecar's own capture and status
    // ports) goes to it. The admin port stays captured: the sidecar forwards to the pod IP,
    // where admin (loopback only) does not listen, so it is refused.
    let mut inbound_excluded = ports(&args.exclude_inbound_ports)?;
    inbound_excluded.extend([args.inbound_port, args.outbound_port, args.status_port]);
    for port in inbound_excluded {
        out.push(format!("-A {INBOUND} -p tcp --dport {port} -j RETURN"));
    }
    out.push(format!("-A {INBOUND} -p tcp -j {INBOUND_REDIRECT}"));
    // Outbound: the proxy's own connections (uid/gid) and loopback leave as they are.
    out.push(format!(
        "-A {OUTPUT} -m owner --uid-owner {} -j RETURN",
        args.proxy_uid
    ));
    out.push(format!(
        "-A {OUTPUT} -m owner --gid-owner {} -j RETURN",
        args.proxy_gid
    ));
    out.push(format!("-A {OUTPUT} -o lo -j RETURN"));
    for port in ports(&args.exclude_outbound_ports)? {
        out.push(format!("-A {OUTPUT} -p tcp --dport {port} -j RETURN"));
    }
    for cidr in exclude_outbound_ranges.iter().filter(|c| *c != "*") {
        out.push(format!("-A {OUTPUT} -d {cidr} -j RETURN"));
    }
    if include_outbound_ranges.iter().any(|c| c == "*") {
        out.push(format!("-A {OUTPUT} -p tcp -j {REDIRECT}"));
    } else {
        for cidr in &include_outbound_ranges {
            out.push(format!("-A {OUTPUT} -p tcp -d {cidr} -j {REDIRECT}"));
        }
    }
    for (chain, target) in JUMPS {
        out.push(format!("-A {chain} -p tcp -j {target}"));
    }
    out.push("COMMIT".into());
    Ok(out.join("\n") + "\n")
}

/// A comma-separated port list (annotation syntax); empty means none.
fn ports(list: &str) -> anyhow::Result<Vec<u16>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("port {p:?} is not a number from 0 to 65535"))
        })
        .collect()
}

/// A comma-separated CIDR list; `*` means all. Checked so a typo fails the init step loudly
/// instead of leaving a pod without (or with too much) capture.
fn cidrs(list: &str) -> anyhow::Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c == "*" || valid_cidr(c) {
                Ok(c.to_string())
            } else {
                Err(anyhow::anyhow!("{c:?} is not an IP range like 10.0.0.0/8"))
            }
        })
        .collect()
}

fn valid_cidr(text: &str) -> bool {
    let (ip, bits) = text.split_once('/').unwrap_or((text, "32"));
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
        Ok(std::net::IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
        Err(_) => false,
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("iptables")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run iptables: {e}"))?;
    anyhow::ensure!(status.success(), "iptables {} failed", args.join(" "));
    Ok(())
}

fn restore(rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "iptables-restore failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with `extra` flag-style settings applied.
    fn args(extra: &[&str]) -> InitOptions {
        let mut options = InitOptions::default();
        for pair in extra.chunks(2) {
            let value = pair[1].to_string();
            match pair[0] {
                "--exclude-outbound-ports" => options.exclude_outbound_ports = value,
                "--exclude-inbound-ports" => options.exclude_inbound_ports = value,
                "--exclude-outbound-ip-ranges" => options.exclude_outbound_ip_ranges = value,
                "--include-outbound-ip-ranges" => options.include_outbound_ip_ranges = value,
                other => panic!("no such setting {other}"),
            }
        }
        options
    }

    #[test]
    fn defaults_capture_everything_but_the_proxy_and_loopback() {
        let rules = rules(&args(&[])).unwrap();
        assert!(rules.contains("-A FERRY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
        assert!(rules.contains("-A FERRY_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
        assert!(rules.contains("-A FERRY_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
        assert!(rules.contains("-A FERRY_OUTPUT -o lo -j RETURN"));
        assert!(rules.contains("-A FERRY_OUTPUT -p tcp -j FERRY_REDIRECT"));
        assert!(rules.contains("-A PREROUTING -p tcp -j FERRY_INBOUND"));
        assert!(rules.contains("-A FERRY_INBOUND -p tcp --dport 15020 -j RETURN"));
        assert!(
            !rules.contains("--dport 15000"),
            "admin stays captured:\n{rules}"
        );
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn exclusions_and_include_ranges_become_rules() {
        let rules = rules(&args(&[
            "--exclude-outbound-ports",
            "5432, 6379",
            "--exclude-inbound-ports",
            "9090",
            "--exclude-outbound-ip-ranges",
            "169.254.169.254/32",
            "--include-outbound-ip-ranges",
            "10.96.0.0/12,10.244.0.0/16",
        ]))
        .unwrap();
        for line in [
            "-A FERRY_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A FERRY_OUTPUT -p tcp --dport 6379 -j RETURN",
            "-A FERRY_INBOUND -p tcp --dport 9090 -j RETURN",
            "-A FERRY_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A FERRY_OUTPUT -p tcp -d 10.96.0.0/12 -j FERRY_REDIRECT",
        ] {
            assert!(rules.contains(line), "missing {line}:\n{rules}");
        }
        assert!(!rules.contains("-A FERRY_OUTPUT -p tcp -j FERRY_REDIRECT"));
    }

    #[test]
    fn a_bad_port_or_range_fails_with_the_value() {
        let error = rules(&args(&["--exclude-outbound-ports", "80,http"])).unwrap_err();
        assert!(error.to_string().contains("\"http\""), "{error}");
        let error = rules(&args(&["--exclude-outbound-ip-ranges", "10.0.0.0/33"])).unwrap_err();
        assert!(error.to_string().contains("10.0.0.0/33"), "{error}");
    }
}
