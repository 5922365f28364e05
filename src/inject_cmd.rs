//! `ferry inject -f FILE`: the webhook's mutation applied to the pods of a manifest, printed
//! (manual injection, as `istioctl kube-inject`).

use ferry_controller::inject::{inject, pod_template_path};
use serde::Deserialize;
use std::io::Read;

use crate::cli::InjectCmdArgs;

pub fn run(args: InjectCmdArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?
    };
    let config = args.inject.config();
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| anyhow::anyhow!("{}: document {index}: {e}", args.file.display()))?;
        if value.is_null() {
            continue;
        }
        let mut json: serde_json::Value = serde_json::to_value(&value)?;
        let kind = json["kind"].as_str().unwrap_or_default().to_string();
        if let Some(path) = pod_template_path(&kind) {
            if let Some(template) = json.pointer_mut(path) {
                if let Err(skipped) = inject(template, &config) {
                    let name = json["metadata"]["name"].as_str().unwrap_or("?");
                    eprintln!("{kind} {name}: not injected ({skipped:?})");
                }
            }
        }
        documents.push(serde_yaml::to_string(&json)?);
    }
    print!("{}", documents.join("---\n"));
    Ok(())
}
