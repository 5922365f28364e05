//! `ferry migrate`: Ingresses to Gateway API (see `ferry_controller::migrate`). The objects
//! go to stdout; what could not be converted goes to stderr (and on top of the YAML as
//! comments), and a manifest that cannot be read stops the command.

use ferry_controller::inputs::Inputs;
use ferry_controller::migrate::{migrate, to_yaml, MigrateOptions};

use crate::cli::MigrateArgs;

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let mut inputs = Inputs::default();
    if args.sources.cluster {
        let (live, _) =
            ferry_controller::cluster::list_once(args.sources.kubeconfig.as_deref()).await?;
        inputs = live;
    }
    let mut problems = Vec::new();
    for path in &args.sources.files {
        crate::analyze_cmd::read_into(path, &mut inputs, &mut problems);
    }
    if let Some(problem) = problems.first() {
        anyhow::bail!("{problem}");
    }
    let options = MigrateOptions {
        gateway_class: args.gateway_class,
        http_port: args.http_port,
        https_port: args.https_port,
        ingress_classes: args.ingress_class,
    };
    let migration = migrate(&inputs, &options);
    for note in &migration.notes {
        let mark = if note.security {
            "NOT CONVERTED (security)"
        } else {
            "not converted"
        };
        eprintln!("{mark}: {} {}: {}", note.object, note.field, note.message);
    }
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&migration.objects)?),
        _ => print!("{}", to_yaml(&migration)),
    }
    Ok(())
}
