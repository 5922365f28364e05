//! Translator golden tests: every `golden/*.in.yaml` is loaded and translated, and the
//! result (snapshot + reports, or the load error) must equal `golden/*.out.yaml`.
//!
//! Cases named `mesh-*` are translated for a sidecar of namespace `weather` with label
//! `app=weather` (the mesh scope).
//!
//! Regenerate after an intended change with `FERRY_UPDATE_GOLDEN=1 cargo test -p ferry-controller
//! --test golden`, then review the diff.

use ferry_controller::inputs::{parse_manifests, Inputs};
use ferry_controller::{translate, Options};
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The YAML text a case produces.
fn render(input: &Path) -> String {
    let text = std::fs::read_to_string(input).expect("read input");
    let value = match parse_manifests(&text, &input.file_name().unwrap().to_string_lossy()) {
        Ok(objects) => {
            let mut options = Options::default();
            if input
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("mesh-")
            {
                options.mesh_namespace = Some("weather".into());
                options.gateway_labels = vec![("app".into(), "weather".into())];
            }
            let output = translate(&Inputs::from_objects(objects), &options);
            serde_json::to_value(&output).expect("serialize output")
        }
        Err(e) => serde_json::json!({ "load_error": e.to_string() }),
    };
    serde_yaml::to_string(&value).expect("yaml")
}

#[test]
fn translator_matches_golden_files() {
    let update = std::env::var_os("FERRY_UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for input in &inputs {
        let expected_path = PathBuf::from(input.to_string_lossy().replace(".in.yaml", ".out.yaml"));
        let actual = render(input);
        if update {
            std::fs::write(&expected_path, &actual).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual);
            failures.push(format!(
                "{}:\n{}",
                input.display(),
                diff.unified_diff().header("expected", "actual")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (FERRY_UPDATE_GOLDEN=1 to regenerate):\n{}",
        failures.join("\n")
    );
}
