//! `ferry proxy-status`: every proxy connected to a controller and whether it serves the
//! latest snapshot (as `istioctl proxy-status` does for istiod).

use ferry_controller::push::ProxyState;

use crate::cli::ProxyStatusArgs;
use crate::proxy_config::{fetch, table};

pub async fn run(args: ProxyStatusArgs) -> anyhow::Result<()> {
    let document = fetch(&args.controller, "/debug/proxies").await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    let proxies: Vec<ProxyState> = serde_json::from_value(document["proxies"].clone())?;
    print!("{}", render(&proxies));
    if let Some(held) = document["heldBack"].as_array().filter(|h| !h.is_empty()) {
        println!("\nConfiguration held back (last good kept):");
        for entry in held {
            for reason in entry["reasons"].as_array().into_iter().flatten() {
                println!("  {}", reason.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn render(proxies: &[ProxyState]) -> String {
    let rows = proxies
        .iter()
        .map(|p| {
            vec![
                p.proxy.clone(),
                p.scope.clone(),
                p.sync().to_string(),
                p.sent_version.to_string(),
                p.acked_version.to_string(),
                p.nack_reasons.join("; "),
            ]
        })
        .collect();
    table(
        &["NAME", "SCOPE", "SYNC", "SENT", "ACKED", "NACK REASON"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_proxy_with_its_sync_state() {
        let synced = ProxyState {
            proxy: "gw-a.infra".into(),
            scope: "infra/public".into(),
            sent_version: 7,
            acked_version: 7,
            ..ProxyState::default()
        };
        let refused = ProxyState {
            proxy: "gw-b.infra".into(),
            sent_version: 8,
            acked_version: 7,
            nacked_version: Some(8),
            nack_reasons: vec!["bad".into()],
            ..synced.clone()
        };
        let out = render(&[synced, refused]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("SYNCED"), "{out}");
        assert!(
            lines[2].contains("NACK") && lines[2].ends_with("bad"),
            "{out}"
        );
    }
}
