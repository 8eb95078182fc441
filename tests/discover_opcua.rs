//! `linepilot discover` against the simulated line (linesim in-process, demo
//! scenario, frozen): every OPC UA variable of linesim's catalog must come
//! out as a `[[tag]]` with its NodeId, unit and value type, and the snippet
//! must load as a config once a site, area, line, asset and the matching
//! `[[source]]` are put in front of it.

mod common;

use std::process::Command;

use linepilot::config::{Config, SourceConfig, TagAddress};
use linepilot::domain::ValueKind;
use linesim::line::live::LiveOptions;
use linesim::line::{Binding, PlcType};
use linesim::server::Running;

async fn start_line(pki: &std::path::Path) -> Running {
    let opts = LiveOptions { speed: 0.0, skip_ns: 0, start_ns: Some(1_700_000_000_000_000_000), truth: None };
    common::start_line(pki, opts, |_| {}).await
}

fn expected_kind(ty: PlcType) -> ValueKind {
    match ty {
        PlcType::Bool => ValueKind::Bool,
        PlcType::F32 | PlcType::F64 => ValueKind::F64,
        _ => ValueKind::I64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_lists_every_linesim_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = start_line(&dir.path().join("linesim-pki")).await;
    let endpoint = line.opcua.endpoint_url.replace("opc.tcp://", "opcua://");
    let data_dir = dir.path().join("data");

    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_linepilot"))
            .args(["discover", &endpoint, "--trust-server-cert", "--source-id", "plc", "--asset", "filler"])
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("running linepilot discover")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "discover failed:\nstderr:\n{stderr}\nstdout:\n{stdout}");
    assert!(stderr.contains("variables"), "no summary on stderr: {stderr}");
    assert!(stdout.contains("# [[source]]"), "no commented source example:\n{stdout}");

    let text = format!(
        "[site]\nname = \"Test\"\ntime_zone = \"UTC\"\n\n[[area]]\nid = \"a\"\nname = \"A\"\n\n\
         [[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"a\"\n\n\
         [[asset]]\nid = \"filler\"\nname = \"Filler\"\nline = \"line1\"\nkind = \"filler\"\n\n\
         [[source]]\nid = \"plc\"\nkind = \"opcua\"\nendpoint = \"{}\"\n\n{stdout}",
        line.opcua.endpoint_url
    );
    let cfg = match Config::from_str_named(&text, "discovered.toml") {
        Ok(c) => c,
        Err(e) => panic!("the snippet does not load: {e}\n{text}"),
    };
    assert!(cfg.sources.iter().any(|s| matches!(s, SourceConfig::OpcUa(o) if o.id == "plc")));

    let catalog = &line.line.feed.catalog;
    let mut want = 0;
    for t in &catalog.tags {
        let Binding::OpcUa { path } = &t.binding else { continue };
        want += 1;
        let node = format!("ns=2;s={path}");
        let tag = cfg
            .tags
            .iter()
            .find(|c| text_address(&stdout, &c.name).as_deref() == Some(node.as_str()))
            .unwrap_or_else(|| panic!("{node} ({}) not discovered:\n{stdout}", t.name));
        assert_eq!(tag.unit, t.unit, "{node}: unit");
        assert_eq!(tag.value_type, expected_kind(t.ty), "{node}: value type");
        assert_eq!(tag.description, t.description, "{node}: description");
        assert_eq!(tag.source.as_deref(), Some("plc"));
        assert!(matches!(tag.address, Some(TagAddress::OpcUa(_))), "{node}: parsed as an OPC UA address");
        assert!(tag.name.starts_with("line1."), "{}: name from the browse path", tag.name);
        assert!(tag.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'));
    }
    assert_eq!(want, 47, "linesim's catalog has 47 OPC UA variables");
    assert_eq!(cfg.tags.len(), 47, "exactly the catalog's variables, no properties or ns=0 nodes");
    line.line.stop();
}

/// The `address` written right after `name = "<name>"` in the snippet.
fn text_address(snippet: &str, name: &str) -> Option<String> {
    let at = snippet.find(&format!("name = \"{name}\"\n"))?;
    let rest = &snippet[at..];
    let line = rest.lines().find(|l| l.starts_with("address = "))?;
    Some(line.trim_start_matches("address = ").trim_matches('"').to_string())
}
