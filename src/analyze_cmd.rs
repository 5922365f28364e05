//! `ferry analyze`: prints every problem in manifests or a live cluster (see
//! `ferry_controller::analyze`) and sets the exit status for CI gates.

use ferry_controller::analyze::{analyze, load_finding, Finding, Level};
use ferry_controller::inputs::{manifest_files, parse_manifests, Inputs};

use crate::cli::AnalyzeArgs;

pub async fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let mut inputs = Inputs::default();
    let mut findings = Vec::new();
    if args.sources.cluster {
        let (live, errors) =
            ferry_controller::cluster::list_once(args.sources.kubeconfig.as_deref()).await?;
        inputs = live;
        findings.extend(errors.iter().map(load_finding));
    }
    let mut documents = 0;
    for path in &args.sources.files {
        documents += read_into(path, &mut inputs, &mut findings);
    }
    findings.extend(analyze(&inputs));
    findings.sort();
    findings.dedup();
    print(&args, &findings, object_count(&inputs).max(documents))?;
    let threshold = match args.failure_threshold.as_str() {
        "Warning" => Level::Warning,
        _ => Level::Error,
    };
    if findings.iter().any(|f| f.severity <= threshold) {
        std::process::exit(1);
    }
    Ok(())
}

/// Adds each file's objects; a file that cannot be read or parsed becomes a finding (and its
/// objects are left out, as the gateway would leave the change out). Returns objects read.
pub fn read_into(
    path: &std::path::Path,
    inputs: &mut Inputs,
    findings: &mut Vec<Finding>,
) -> usize {
    let files = match manifest_files(path) {
        Ok(files) => files,
        Err(e) => {
            findings.push(load_finding(&e));
            return 0;
        }
    };
    let mut count = 0;
    for file in files {
        let origin = file.display().to_string();
        let parsed = std::fs::read_to_string(&file)
            .map_err(|source| ferry_controller::LoadError::Read {
                path: file.clone(),
                source,
            })
            .and_then(|text| parse_manifests(&text, &origin));
        match parsed {
            Ok(objects) => {
                count += objects.len();
                objects.into_iter().for_each(|o| inputs.add(o));
            }
            Err(e) => findings.push(load_finding(&e)),
        }
    }
    count
}

fn object_count(inputs: &Inputs) -> usize {
    inputs.gateway_classes.len()
        + inputs.gateways.len()
        + inputs.http_routes.len()
        + inputs.grpc_routes.len()
        + inputs.tls_routes.len()
        + inputs.tcp_routes.len()
        + inputs.reference_grants.len()
        + inputs.istio_gateways.len()
        + inputs.virtual_services.len()
        + inputs.destination_rules.len()
        + inputs.ingresses.len()
        + inputs.services.len()
}

fn print(args: &AnalyzeArgs, findings: &[Finding], objects: usize) -> anyhow::Result<()> {
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(findings)?);
        return Ok(());
    }
    if findings.is_empty() {
        println!("No validation issues found when analyzing {objects} object(s).");
    }
    for finding in findings {
        println!("{finding}");
    }
    Ok(())
}
