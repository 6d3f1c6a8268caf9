use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| match k {
        "TEST_KEY" => Some("sk-test".to_string()),
        _ => None,
    };
    load_sources_with_env(&[Source { file: "test.toml".into(), text: text.into() }], &env)
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
fn a_tenant_share_must_fit_the_queue() {
    let local = "[[experts]]\nname = \"l\"\nkind = \"local\"\npath = \"x.gguf\"\nqueue_limit = 4\n";
    let err = load(&format!("{local}tenant_queue_limit = 5\n")).unwrap_err().to_string();
    assert!(
        err.contains("experts[0].tenant_queue_limit") && err.contains("between 1 and queue_limit (4), got 5"),
        "{err}"
    );
    let c = load(&format!("{local}tenant_queue_limit = 4\n")).unwrap();
    assert!(matches!(&c.experts[0].kind, ExpertKind::Local(s) if s.tenant_queue_limit == Some(4)));
}

#[test]
fn an_unknown_local_arch_names_the_file_and_key() {
    let local = "[[experts]]\nname = \"l\"\nkind = \"local\"\npath = \"x.gguf\"\n";
    let err = load(&format!("{local}arch = \"mamba\"\n")).unwrap_err().to_string();
    assert!(err.starts_with("test.toml: at `experts[0].arch`"), "{err}");
    assert!(err.contains("mamba") && err.contains("llama") && err.contains("qwen2") && err.contains("gemma3"), "{err}");
    for arch in ["llama", "qwen2", "gemma3"] {
        let c = load(&format!("{local}arch = \"{arch}\"\n")).unwrap();
        assert!(matches!(&c.experts[0].kind, ExpertKind::Local(s) if s.arch.as_deref() == Some(arch)));
    }
}

#[test]
fn a_base_url_that_is_not_a_url_names_the_file_and_key() {
    for bad in ["http://", "http://exa mple.com/v1", "https://127.0.0.1:99999/v1", "http://[::1/v1"] {
        let err = load(&REMOTE.replace("http://127.0.0.1:9/v1/", bad)).unwrap_err().to_string();
        assert!(err.starts_with("test.toml: at `experts[0].base_url`"), "{bad}: {err}");
        assert!(err.contains("is not a valid URL") && err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
    let err = load(&REMOTE.replace("http://127.0.0.1:9/v1/", "ftp://x/v1")).unwrap_err().to_string();
    assert!(err.contains("experts[0].base_url") && err.contains("must start with http://"), "{err}");
}

#[test]
fn the_embedded_default_is_valid() {
    let c = embedded_default().unwrap();
    assert!(c.models.iter().any(|m| m.name == "triage"));
    assert!(c.experts.iter().all(|e| matches!(e.kind, ExpertKind::Local(_))));
}

/// A router folder with the given labels, as `router = "r"` expects it.
fn routers(labels: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("r")).unwrap();
    let list: Vec<String> = labels.iter().map(|l| format!("{l:?}")).collect();
    std::fs::write(dir.path().join("r/router.toml"), format!("labels = [{}]\n", list.join(", "))).unwrap();
    dir
}

fn routed(dir: &tempfile::TempDir, model: &str) -> String {
    format!("{REMOTE}[[experts]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n[routing]\nrouters_dir = {:?}\n{model}", dir.path().display().to_string())
}

/// Retraining rewrites `router.toml`'s `version`: the config is then a new version, and the
/// router reference differs, so a reload builds the retrained router instead of keeping
/// the old one.
#[test]
fn a_retrained_router_makes_a_new_config_version() {
    let dir = routers(&["coding", "math"]);
    let text = routed(
        &dir,
        "[[models]]\nname = \"m\"\nrouter = \"r\"\nfallback = \"a\"\n[models.categories]\n\"*\" = [\"a\"]\n",
    );
    let toml = dir.path().join("r/router.toml");
    let labels = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("version = \"v1\"\n{labels}")).unwrap();
    let (v1, v1_again) = (load(&text).unwrap(), load(&text).unwrap());
    assert_eq!(v1.version, v1_again.version, "the same files and router: the same version");
    std::fs::write(&toml, format!("version = \"v2\"\n{labels}")).unwrap();
    let v2 = load(&text).unwrap();
    assert_ne!(v1.version, v2.version);
    assert_ne!(v1.models[0].router, v2.models[0].router);
}

#[test]
fn a_routed_model_validates_against_the_router_labels() {
    let dir = routers(&["coding", "math"]);
    let ok = routed(&dir, "[[models]]\nname = \"m\"\nrouter = \"r\"\nfallback = \"a\"\n[models.categories]\ncoding = [\"b\", \"a\"]\nmath = [\"a\"]\n");
    let c = load(&ok).unwrap();
    assert_eq!(c.models[0].categories["coding"], ["b", "a"]);

    let unknown_cat = ok.replace("math = ", "maths = ");
    let err = load(&unknown_cat).unwrap_err().to_string();
    assert!(err.contains("models[0].categories.maths") && err.contains("no category \"maths\""), "{err}");

    let unmapped = ok.replace("math = [\"a\"]\n", "");
    let err = load(&unmapped).unwrap_err().to_string();
    assert!(err.contains("categories left unmapped: math"), "{err}");
    let catch_all = ok.replace("math = [\"a\"]\n", "\"*\" = [\"a\"]\n");
    assert!(load(&catch_all).is_ok(), "an explicit catch-all maps the rest");

    let unknown_expert = ok.replace("coding = [\"b\", \"a\"]", "coding = [\"b\", \"zz\"]");
    let err = load(&unknown_expert).unwrap_err().to_string();
    assert!(err.contains("models[0].categories.coding[1]") && err.contains("unknown expert \"zz\""), "{err}");

    let bad_threshold = format!("{ok}[models.uncertainty]\nmin_confidence = 1.5\n");
    let err = load(&bad_threshold).unwrap_err().to_string();
    assert!(err.contains("uncertainty.min_confidence") && err.contains("between 0 and 1, got 1.5"), "{err}");

    let no_fallback = ok.replace("fallback = \"a\"\n", "");
    assert!(load(&no_fallback).unwrap_err().to_string().contains("needs a fallback"));
}

#[test]
fn fallback_cycles_are_rejected() {
    let dir = routers(&["x"]);
    let m = |name: &str, fb: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nrouter = \"r\"\nfallback = \"{fb}\"\n[models.categories]\nx = [\"a\"]\n"
        )
    };
    let text = routed(&dir, &format!("{}{}", m("m1", "m2"), m("m2", "m1")));
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("cycle: m1 -> m2 -> m1"), "{err}");
    let chain = routed(&dir, &format!("{}{}", m("m1", "m2"), m("m2", "a")));
    assert!(load(&chain).is_ok());
}

#[test]
fn files_merge_and_errors_name_the_file() {
    let a = Source { file: "experts.toml".into(), text: REMOTE.into() };
    let b =
        Source { file: "policy.toml".into(), text: "[[models]]\nname = \"v\"\nexperts = [\"a\", \"nope\"]\n".into() };
    let env = |_: &str| Some("k".to_string());
    let err = load_sources_with_env(&[a, b], &env).unwrap_err().to_string();
    assert!(err.starts_with("policy.toml: at `models[0].experts[1]`"), "{err}");
    let twice = Source { file: "two.toml".into(), text: "[server]\n".into() };
    let once = Source { file: "one.toml".into(), text: "[server]\n".into() };
    let err = load_sources_with_env(&[once, twice], &env).unwrap_err().to_string();
    assert!(err.contains("two.toml") && err.contains("already set in one.toml"), "{err}");
}

#[test]
fn the_version_hash_follows_the_content() {
    let a = load(REMOTE).unwrap().version;
    let b = load(&format!("{REMOTE}\n")).unwrap().version;
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
    assert_eq!(a, load(REMOTE).unwrap().version);
}
