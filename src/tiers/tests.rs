//! The byte prediction that budgets are reserved with, against real loads.

use super::*;

fn model(file: &str) -> std::path::PathBuf {
    crate::config::models_dir().join(file)
}

fn predicted_vs_loaded(file: &str) {
    // The gemma GGUF has no chat template; loading needs one.
    let cfg = LocalConfig { chat_template: Some("completion".into()), ..LocalConfig::new(model(file)) };
    let (params, bytes) = LocalExpert::predict(&cfg).unwrap();
    let e = LocalExpert::spawn("p", cfg).unwrap();
    let info = e.info();
    eprintln!("{file}: predicted {bytes} bytes {params} params; loaded {} bytes {} params", info.bytes, info.params);
    assert!(bytes >= info.bytes, "prediction {bytes} below the loaded {}", info.bytes);
    // An upper bound, but a tight one: a loose one would waste the budget.
    assert!(bytes as f64 <= info.bytes as f64 * 1.01, "prediction {bytes} far above the loaded {}", info.bytes);
    assert!(e.shutdown().is_ok(), "the only handle must be able to join the worker");
}

#[test]
fn hot_bytes_are_predicted_from_the_header_as_an_upper_bound() {
    predicted_vs_loaded("smollm2-135m-instruct-q4_1.gguf");
    predicted_vs_loaded("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn config_without_tiers_rejects_tier_keys_and_validates_values() {
    let base = "[[experts]]\nname = \"a\"\nkind = \"local\"\npath = \"x.gguf\"\n";
    let err = crate::config::load_str(&format!("{base}pin = true\n"), "t.toml").unwrap_err().to_string();
    assert!(err.contains("experts[0].pin") && err.contains("[tiers]"), "{err}");
    let tiers = "[tiers]\nhot_bytes = 1000\n";
    let err = crate::config::load_str(&format!("{tiers}{base}min_tier = \"hot\"\n"), "t.toml").unwrap_err().to_string();
    assert!(err.contains("experts[0].min_tier") && err.contains("\"hot\""), "{err}");
    let err = crate::config::load_str("[tiers]\nhot_bytes = 0\n", "t.toml").unwrap_err().to_string();
    assert!(err.contains("tiers.hot_bytes"), "{err}");
    let m = format!("{tiers}{base}[[models]]\nname = \"m\"\nexperts = [\"a\"]\nnot_hot = \"later\"\n");
    let err = crate::config::load_str(&m, "t.toml").unwrap_err().to_string();
    assert!(err.contains("models[0].not_hot") && err.contains("\"later\""), "{err}");
    let err = crate::config::load_str("[tiers]\nhot_bytes = 1\nwarm = 2\n", "t.toml").unwrap_err().to_string();
    assert!(err.contains("unknown field `warm`"), "{err}");
}
