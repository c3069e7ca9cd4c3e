//! The `shoprank` binary's offline commands, run as a user would.

use std::io::Write;
use std::process::{Command, Stdio};

use shoprank::config::Precision;

use crate::common;

fn shoprank(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoprank"))
        .args(args)
        .current_dir(common::repo_path(""))
        .env("SHOPRANK_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoprank");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn embed_turns_jsonl_texts_into_encoder_vectors() {
    let output =
        shoprank(&["embed"], "{\"id\": 1, \"text\": \"red mug\"}\n\n{\"id\": \"b\", \"text\": \"garden hose\"}\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[1]["id"], "b");
    // The binary runs the default precision ("auto": int8 on some CPUs).
    let default = common::model_encoder(common::MINILM, common::Backbone::Fast(Precision::Auto));
    let expected = default.embed(&["red mug"], 1).unwrap().remove(0);
    let got: Vec<f32> = lines[0]["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(got.len(), 384);
    assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() <= 1e-5));
}

#[test]
fn embed_names_the_bad_line() {
    let output = shoprank(&["embed"], "{\"id\": 1, \"text\": \"ok\"}\n{\"id\": 2}\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn eval_without_data_says_what_to_give() {
    let output = shoprank(&["eval"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--data") && stderr.contains("--events"), "{stderr}");
}
