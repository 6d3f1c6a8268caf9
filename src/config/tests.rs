use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| match k {
        "TEST_KEY" => Some("sk-test".to_string()),
        _ => None,
    };
    let raw = parse(text, "test.toml")?;
    Validator { file: "test.toml", env: &env }.config(raw)
}

const REMOTE: &str = r#"
[[experts]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1/"
api_key_env = "TEST_KEY"
"#;

#[test]
fn a_remote_expert_gets_defaults_and_its_key_from_the_environment() {
    let c = load(REMOTE).unwrap();
    let ExpertKind::OpenAi(r) = &c.experts[0].kind else { panic!("expected openai") };
    assert_eq!(r.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(r.model, "a");
    assert_eq!(r.api_key.as_ref().map(Secret::expose), Some("sk-test"));
    assert_eq!(r.timeouts.connect, Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS));
    assert_eq!(c.experts[0].capabilities, vec![Capability::Chat]);
}

#[test]
fn an_unknown_key_names_file_line_column_and_path() {
    let text = format!("{REMOTE}temprature = 3\n");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.starts_with("test.toml:7:"), "{err}");
    assert!(err.contains("experts[0]") || err.contains("temprature"), "{err}");
    assert!(err.contains("unknown field `temprature`"), "{err}");
}

#[test]
fn a_wrong_type_names_the_key_path() {
    let err = load("[server]\nmax_body_bytes = \"big\"\n").unwrap_err().to_string();
    assert!(err.contains("test.toml:2:"), "{err}");
    assert!(err.contains("server.max_body_bytes"), "{err}");
}

#[test]
fn a_missing_api_key_variable_is_named() {
    let err = load(&REMOTE.replace("TEST_KEY", "NOPE_KEY")).unwrap_err().to_string();
    assert!(err.contains("experts[0].api_key_env"), "{err}");
    assert!(err.contains("NOPE_KEY is not set"), "{err}");
    assert!(!err.contains("sk-test"));
}

#[test]
fn a_virtual_model_must_name_known_chat_experts() {
    let err = load(&format!("{REMOTE}[[models]]\nname = \"v\"\nexperts = [\"a\", \"b\"]\n")).unwrap_err().to_string();
    assert!(err.contains("models[0].experts[1]") && err.contains("unknown expert \"b\""), "{err}");
}

#[test]
fn duplicate_names_are_rejected() {
    let err = load(&format!("{REMOTE}{REMOTE}")).unwrap_err().to_string();
    assert!(err.contains("experts[1].name") && err.contains("duplicate"), "{err}");
}

#[test]
fn keys_of_the_other_kind_are_rejected() {
    let err = load(&format!("{REMOTE}path = \"x.gguf\"\n")).unwrap_err().to_string();
    assert!(err.contains("experts[0].path") && err.contains("kind = \"openai\""), "{err}");
}

#[test]
fn the_embedded_default_is_valid() {
    let c = embedded_default().unwrap();
    assert!(c.models.iter().any(|m| m.name == "triage"));
    assert!(c.experts.iter().all(|e| matches!(e.kind, ExpertKind::Local(_))));
}
