//! `ferry sidecar-init`: the flags, mapped onto the mesh's capture rules
//! (`ferry_mesh::init_rules`).

use ferry_mesh::init_rules::{self, InitOptions};

use crate::cli::SidecarInitArgs;

pub fn run(args: SidecarInitArgs) -> anyhow::Result<()> {
    init_rules::run(&options(&args), args.dry_run)
}

fn options(args: &SidecarInitArgs) -> InitOptions {
    InitOptions {
        outbound_port: args.outbound_port,
        inbound_port: args.inbound_port,
        status_port: args.status_port,
        proxy_uid: args.proxy_uid,
        proxy_gid: args.proxy_gid,
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        exclude_outbound_ip_ranges: args.exclude_outbound_ip_ranges.clone(),
        include_outbound_ip_ranges: args.include_outbound_ip_ranges.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_flags_defaults_are_the_rules_defaults() {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SidecarInitArgs,
        }
        let parsed = options(&Wrapper::parse_from(["sidecar-init"]).args);
        let rules = init_rules::rules(&parsed).unwrap();
        assert_eq!(rules, init_rules::rules(&InitOptions::default()).unwrap());
    }
}
