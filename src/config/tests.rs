// figment's `Jail` fixes its closures' error type, a large `figment::Error`.
#![allow(clippy::result_large_err)]

use super::*;

#[test]
fn defaults_parse_and_validate() {
    // Inside a Jail: the other tests set environment variables.
    figment::Jail::expect_with(|_| {
        let settings = Settings::load(None).expect("default config");
        assert_eq!(settings.server.addr.port(), 8080);
        assert_eq!(settings.limits.max_candidates, 1000);
        assert_eq!(settings.encoder.precision, Precision::Auto, "auto unless chosen, and kept as written");
        Ok(())
    });
}

#[test]
fn environment_overrides_a_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SHOPRANK__LIMITS__MAX_CANDIDATES", "7");
        let settings = Settings::load(None).expect("config");
        assert_eq!(settings.limits.max_candidates, 7);
        Ok(())
    });
}

#[test]
fn zero_limit_is_rejected_with_its_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SHOPRANK__LIMITS__MAX_CANDIDATES", "0");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("limits.max_candidates"), "{err}");
        Ok(())
    });
}

#[test]
fn a_preset_sets_its_encoder_keys_and_the_user_layers_still_win() {
    figment::Jail::expect_with(|jail| {
        let default = Settings::load(None).expect("default preset");
        assert_eq!(default.encoder.preset, "all-MiniLM-L6-v2");
        assert_eq!(default.encoder.source, "models/all-MiniLM-L6-v2");
        assert_eq!(default.bundle.path, Path::new("models/bundle"));

        jail.set_env("SHOPRANK__ENCODER__PRESET", "m3e-small");
        let chinese = Settings::load(None).expect("m3e-small preset");
        assert_eq!(chinese.encoder.source, "models/m3e-small");
        assert_eq!(chinese.bundle.path, Path::new("models/bundle-m3e-small"));

        // A file's own key beats the preset's; --preset beats the file's preset.
        jail.create_file("x.toml", "[encoder]\npreset = \"m3e-small\"\nsource = \"elsewhere\"\n")?;
        let file = Settings::load(Some(Path::new("x.toml"))).expect("file over preset");
        assert_eq!(
            (file.encoder.source.as_str(), file.bundle.path.as_path()),
            ("elsewhere", Path::new("models/bundle-m3e-small"))
        );
        let flag = Settings::load_with_preset(None, Some("all-MiniLM-L6-v2")).expect("flag");
        assert_eq!(flag.encoder.preset, "all-MiniLM-L6-v2", "--preset beats SHOPRANK__ENCODER__PRESET");
        assert_eq!(flag.bundle.path, Path::new("models/bundle"));
        jail.create_file("y.toml", "[encoder]\npreset = \"m3e-small\"\n")?;
        let flag = Settings::load_with_preset(Some(Path::new("y.toml")), Some("all-MiniLM-L6-v2")).expect("flag");
        assert_eq!(flag.encoder.source, "models/all-MiniLM-L6-v2", "--preset beats the file's preset");

        let err = Settings::load_with_preset(None, Some("bert-base")).unwrap_err().to_string();
        assert!(err.contains("encoder.preset") && err.contains("m3e-small"), "{err}");
        Ok(())
    });
}

#[test]
fn precision_and_int8_layers_are_kept_as_written_and_name_what_they_refuse() {
    figment::Jail::expect_with(|jail| {
        let settings = Settings::load(None).expect("default config");
        assert_eq!(settings.encoder.int8_layers, LinearLayer::ALL);
        jail.create_file("f32.toml", "[encoder]\nprecision = \"f32\"\n")?;
        let exact = Settings::load(Some(Path::new("f32.toml"))).expect("f32");
        assert_eq!(exact.encoder.precision, Precision::F32);
        jail.create_file("x.toml", "[encoder]\nprecision = \"int8\"\nint8_layers = [\"qkv\", \"output\"]\n")?;
        let some = Settings::load(Some(Path::new("x.toml"))).expect("some layers");
        assert_eq!(some.encoder.precision, Precision::Int8);
        assert_eq!(some.encoder.int8_layers, [LinearLayer::Qkv, LinearLayer::Output]);
        jail.create_file("y.toml", "[encoder]\nint8_layers = [\"attention\"]\n")?;
        let err = Settings::load(Some(Path::new("y.toml"))).unwrap_err().to_string();
        assert!(err.contains("attention") && err.contains("attention_output"), "{err}");
        jail.create_file("z.toml", "[encoder]\nprecision = \"int4\"\n")?;
        let err = Settings::load(Some(Path::new("z.toml"))).unwrap_err().to_string();
        assert!(err.contains("int4") && err.contains("`auto`, `f32`, `int8`"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_key_is_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("x.toml", "[server]\nadress = \"1.2.3.4:1\"\n")?;
        let err = Settings::load(Some(Path::new("x.toml"))).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        Ok(())
    });
}

#[test]
fn a_default_deadline_past_the_request_timeout_is_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SHOPRANK__LIMITS__DEFAULT_DEADLINE_MS", "10001");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("limits.default_deadline_ms") && err.contains("request_timeout_secs"), "{err}");
        jail.set_env("SHOPRANK__LIMITS__DEFAULT_DEADLINE_MS", "10000");
        assert_eq!(Settings::load(None).expect("at the timeout is allowed").limits.default_deadline_ms, 10_000);
        Ok(())
    });
}

#[test]
fn an_index_dir_is_for_replicas_on_postgres_only() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SHOPRANK__CATALOG__INDEX_DIR", "/var/lib/shoprank/index");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("catalog.index_dir") && err.contains("PostgreSQL"), "{err}");
        jail.set_env("SHOPRANK__STORE__URL", "postgres://shoprank@db:5432/shop");
        let settings = Settings::load(None).expect("allowed with PostgreSQL");
        assert_eq!(settings.catalog.index_dir.as_deref(), Some(std::path::Path::new("/var/lib/shoprank/index")));
        Ok(())
    });
}
