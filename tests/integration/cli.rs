//! The `shoprank` binary's offline commands, run as a user would.

use std::io::Write;
use std::process::{Command, Stdio};

use shoprank::Precision;

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
fn a_bad_forced_int8_kernel_is_a_start_up_error_naming_the_variable() {
    for bad in ["nonsense", "amx512"] {
        let output = Command::new(env!("CARGO_BIN_EXE_shoprank"))
            .args(["embed"])
            .current_dir(common::repo_path(""))
            .env("SHOPRANK_LOG", "error")
            .env("SHOPRANK_INT8_KERNEL", bad)
            .stdin(Stdio::null())
            .output()
            .expect("run shoprank");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "an error, not a panic (101): {stderr}");
        assert!(stderr.contains(&format!("SHOPRANK_INT8_KERNEL={bad}")) && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn eval_without_data_says_what_to_give() {
    let output = shoprank(&["eval"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--data") && stderr.contains("--events"), "{stderr}");
}

/// `eval-search --judged DIR` reads a judged set and ranks its whole
/// catalog by every method; a query naming one product exactly finds it.
#[test]
fn eval_search_measures_a_judged_query_set() {
    let dir = common::temp_dir("judged");
    let titles = [
        "cordless drill 20v lithium",
        "claw hammer 16 oz",
        "red leather handbag",
        "blue denim jeans slim fit",
        "stainless steel vacuum flask",
        "garden hose 50 ft",
    ];
    let mut items = String::from("item_id,text\n");
    for (i, title) in titles.iter().enumerate() {
        items.push_str(&format!("p{i},{title}\n"));
    }
    std::fs::write(dir.join("items.csv"), items).unwrap();
    let judgements = "query,item_id,gain\n20v drill,p0,2\n20v drill,p1,0.5\nhandbag,p2,2\nhandbag,p3,0\n";
    std::fs::write(dir.join("judgements.csv"), judgements).unwrap();
    let out = dir.join("report.json");
    let output = shoprank(
        &[
            "eval-search",
            "--judged",
            dir.to_str().unwrap(),
            "--relevant-gain",
            "2",
            "--cache-dir",
            "",
            "--out",
            out.to_str().unwrap(),
        ],
        "",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!((report["catalog_items"].as_u64(), report["queries"].as_u64()), (Some(6), Some(2)), "{report}");
    for method in ["dense-shipped", "cosine", "bm25", "rrf"] {
        let m = &report["results"][method];
        assert_eq!(m["recall@100"].as_f64(), Some(1.0), "{method}: {report}");
        assert!(m["ndcg@10"].as_f64().unwrap() > 0.9, "{method}: {report}");
    }
    assert!(stdout.contains("bm25") && stdout.contains("NDCG@10"), "{stdout}");
}
