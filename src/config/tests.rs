//! Loader tests: every class of problem, with exact line, column and key.

use super::*;

/// A valid plant: one area, line, asset and one source of each kind (26 lines).
const BASE: &str = r#"[site]
name = "Plant"
[[area]]
id = "a1"
name = "Area"
[[line]]
id = "l1"
name = "Line"
area = "a1"
[[asset]]
id = "filler"
name = "Filler"
line = "l1"
kind = "filler"
[[source]]
id = "plc"
kind = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
[[source]]
id = "io"
kind = "modbus"
endpoint = "tcp://127.0.0.1:502"
[[source]]
id = "broker"
kind = "mqtt"
url = "mqtt://127.0.0.1"
"#;

/// Lines in [`BASE`]; text appended to it starts on line `B + 1`.
const B: usize = 26;

fn load(text: &str) -> Result<Config, Vec<Diagnostic>> {
    Config::from_str_named(text, "plant.toml").map_err(|e| e.diagnostics().to_vec())
}

/// The diagnostics of `BASE + extra`, which must fail.
fn errors(extra: &str) -> Vec<Diagnostic> {
    errors_of(&format!("{BASE}{extra}"))
}

fn errors_of(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(d) => d,
    }
}

/// Asserts one diagnostic at `line:col` on `key` whose message contains `msg`.
#[track_caller]
fn one(d: &[Diagnostic], line: usize, col: usize, key: &str, msg: &str) {
    let listing: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 1, "expected one diagnostic, got:\n{}", listing.join("\n"));
    is(&d[0], line, col, key, msg);
}

#[track_caller]
fn is(d: &Diagnostic, line: usize, col: usize, key: &str, msg: &str) {
    assert_eq!((d.line, d.column, d.key.as_str()), (line, col, key), "diagnostic: {d}");
    assert!(d.message.contains(msg), "`{}` lacks `{msg}`", d.message);
    assert_eq!(d.file, "plant.toml");
}

#[test]
fn base_and_example_load() {
    let c = load(BASE).expect("BASE is valid");
    assert_eq!(c.site.time_zone, "UTC");
    assert_eq!(c.store, crate::store::config::StoreConfig::default());
    assert_eq!(c.sources.len(), 3);

    let c = match Config::from_str_named(EXAMPLE, "example.toml") {
        Ok(c) => c,
        Err(e) => panic!("EXAMPLE must load:\n{e}"),
    };
    assert_eq!(c.site.time_zone, "Europe/Berlin");
    assert_eq!(c.store.data_dir, std::path::PathBuf::from("./data"));
    assert_eq!(c.assets.len(), 3);
    assert_eq!(c.tags.len(), 13);
    assert_eq!((c.shifts.len(), c.planned_stops.len()), (3, 2));
    assert_eq!(c.lines[0].key_asset.as_deref(), Some("filler"));
    let kinds: Vec<SourceKind> = c.sources.iter().map(|s| s.kind()).collect();
    assert_eq!(kinds, [SourceKind::OpcUa, SourceKind::Modbus, SourceKind::Mqtt]);
    let count = |f: fn(&TagAddress) -> bool| c.tags.iter().filter(|t| t.address.as_ref().is_some_and(f)).count();
    assert_eq!(count(|a| matches!(a, TagAddress::OpcUa(_))), 7);
    assert_eq!(count(|a| matches!(a, TagAddress::Modbus(_))), 4);
    assert_eq!(count(|a| matches!(a, TagAddress::Mqtt(_))), 2);
    let coil = c.tags.iter().find(|t| t.name == "washer.auto_mode").and_then(|t| t.address.clone());
    match coil {
        Some(TagAddress::Modbus(m)) => {
            assert_eq!((m.unit, m.register, m.table), (1, 0, ModbusTable::Coil));
            assert_eq!(m.data_type, ModbusDataType::Bool);
        }
        other => panic!("{other:?}"),
    }
    let temp = c.tags.iter().find(|t| t.name == "washer.tank_temp");
    match temp.and_then(|t| t.address.as_ref()) {
        // The source's unit_id fills in a missing `unit`.
        Some(TagAddress::Modbus(m)) => assert_eq!((m.unit, m.order, m.scale), (1, WordOrder::Abcd, Some(0.1))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn syntax_error_is_reported_alone() {
    let d = errors_of("[site]\nname = \"x\"\ntime_zone = \n[[tag]]\nname = 5 5\n");
    one(&d, 3, 13, "(syntax)", "");
    // A duplicate key is a TOML error too.
    let d = errors_of("[site]\nname = \"x\"\nname = \"y\"\n");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].key.as_str()), (3, "(syntax)"));
}

#[test]
fn unknown_keys() {
    let d = errors_of("[site]\nname = \"x\"\ncolour = \"red\"\n[sight]\n");
    assert_eq!(d.len(), 2);
    is(&d[0], 3, 1, "site.colour", "unknown key `colour`, expected `name` or `time_zone`");
    is(&d[1], 4, 2, "sight", "unknown section `sight`");

    let d = errors(
        r#"[[tag]]
name = "t1"
asset = "filler"
description = "d"
unit = "bar"
colour = "red"
limits = { hh = 5.0, high = 4.0 }
"#,
    );
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], B + 6, 1, "tag[0].colour", "unknown key `colour`");
    is(&d[1], B + 7, 22, "tag[0].limits.high", "unknown key `high`");
}

#[test]
fn inline_secret_gets_a_hint() {
    let text = BASE.replace(
        "endpoint = \"opc.tcp://127.0.0.1:4840\"",
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\nsecurity = { user = \"gw\", password = \"hunter2\" }",
    );
    let d = errors_of(&text);
    one(&d, 19, 27, "source[0].security.password", "name an environment variable with `password_env`");
}

#[test]
fn wrong_types() {
    let d = errors(
        r#"[[tag]]
name = "t1"
asset = "filler"
description = 42
value_type = "float"
limits = { hh = "high" }
states = ["a", 3]
"#,
    );
    assert_eq!(d.len(), 4, "{d:?}");
    is(&d[0], B + 4, 15, "tag[0].description", "invalid type: integer `42`, expected a string");
    is(&d[1], B + 5, 14, "tag[0].value_type", "unknown value `float`, expected one of `f64`, `i64`, `bool`, `string`");
    is(&d[2], B + 6, 17, "tag[0].limits.hh", "invalid type: string \"high\", expected f64");
    is(&d[3], B + 7, 16, "tag[0].states[1]", "expected a string");

    let d = errors_of("[site]\nname = \"x\"\n[store]\nfsync_interval = \"fast\"\n[api]\nlisten = 7878\n");
    assert_eq!(d.len(), 2);
    is(&d[0], 4, 18, "store.fsync_interval", "bad duration `fast`");
    is(&d[1], 6, 10, "api.listen", "invalid type: integer `7878`");
}

#[test]
fn missing_keys() {
    // Every missing key of one entry is reported, at the entry's header.
    let d = errors("[[asset]]\nid = \"capper\"\nkind = \"capper\"\n");
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], B + 1, 1, "asset[1].name", "missing key `name`");
    is(&d[1], B + 1, 1, "asset[1].line", "missing key `line`");

    let d = errors_of("[[area]]\nid = \"a\"\nname = \"A\"\n");
    one(&d, 1, 1, "site", "missing section `[site]`");

    // Inside an inline table.
    let d = errors("[[tag]]\nname = \"t\"\nasset = \"filler\"\ndescription = \"d\"\nsource = \"broker\"\naddress = { json_path = \"$.v\" }\n");
    one(&d, B + 6, 11, "tag[0].address.topic", "missing key `topic`");

    // A tag read from a source needs an address; an address needs a source.
    let d = errors("[[tag]]\nname = \"t\"\nasset = \"filler\"\ndescription = \"d\"\nsource = \"plc\"\n[[tag]]\nname = \"u\"\nasset = \"filler\"\ndescription = \"d\"\naddress = \"i=1\"\n");
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], B + 1, 1, "tag[0].address", "a tag read from source `plc` needs one");
    is(&d[1], B + 10, 11, "tag[1].address", "`address` needs `source`");
}

#[test]
fn duplicates() {
    let d = errors(
        r#"[[asset]]
id = "filler"
name = "Filler again"
line = "l1"
kind = "filler"
[[source]]
id = "plc"
kind = "mqtt"
url = "mqtt://h"
[[tag]]
name = "t"
asset = "filler"
description = "d"
[[tag]]
name = "t"
asset = "filler"
description = "d"
"#,
    );
    assert_eq!(d.len(), 3, "{d:?}");
    is(&d[0], B + 2, 6, "asset[1].id", "duplicate asset id `filler` (first defined on line 11)");
    is(&d[1], B + 7, 6, "source[3].id", "duplicate source id `plc` (first defined on line 16)");
    is(&d[2], B + 15, 8, "tag[1].name", "duplicate tag name `t` (first defined on line 37)");
}

#[test]
fn unknown_references() {
    let d = errors(
        r#"[[line]]
id = "l2"
name = "Line 2"
area = "nowhere"
[[asset]]
id = "capper"
name = "Capper"
line = "l3"
kind = "capper"
[[tag]]
name = "t"
asset = "filer"
description = "d"
source = "plcc"
address = "ns=2;s=X"
"#,
    );
    assert_eq!(d.len(), 4, "{d:?}");
    is(&d[0], B + 4, 8, "line[1].area", "unknown area `nowhere`");
    is(&d[1], B + 8, 8, "asset[1].line", "unknown line `l3`");
    is(&d[2], B + 12, 9, "tag[0].asset", "unknown asset `filer`; did you mean `filler`?");
    is(&d[3], B + 14, 10, "tag[0].source", "unknown source `plcc`; did you mean `plc`?");
}

#[test]
fn bad_names() {
    let d = errors("[[tag]]\nname = \"filler bowl pressure\"\nasset = \"filler\"\ndescription = \"d\"\n");
    one(&d, B + 2, 8, "tag[0].name", "bad tag name: `filler bowl pressure` contains ' '");
    let d = errors_of(
        &BASE.replace("time_zone", "x").replace("name = \"Plant\"", "name = \"Plant\"\ntime_zone = \"Berlin\""),
    );
    one(&d, 3, 13, "site.time_zone", "not an IANA time zone name");
}

fn tag(source: &str, address: &str) -> String {
    format!(
        "[[tag]]\nname = \"t\"\nasset = \"filler\"\ndescription = \"d\"\nsource = \"{source}\"\naddress = {address}\n"
    )
}

/// The address is on line B + 6, its value starting at column 11.
const ADDR: usize = B + 6;

#[test]
fn opcua_addresses() {
    for ok in [
        "\"ns=2;s=Line1/Filler/BowlPressure\"",
        "\"ns=3;i=1001\"",
        "\"i=2258\"",
        "\"ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a\"",
        "\"ns=1;b=aGVsbG8=\"",
    ] {
        let c = load(&format!("{BASE}{}", tag("plc", ok))).expect(ok);
        assert!(matches!(c.tags[0].address, Some(TagAddress::OpcUa(_))));
    }
    let d = errors(&tag("plc", "\"ns=2;Line1/Filler\""));
    one(&d, ADDR, 11, "tag[0].address", "bad NodeId `ns=2;Line1/Filler`: expected `i=<number>`");
    let d = errors(&tag("plc", "\"ns=99999;i=1\""));
    one(&d, ADDR, 11, "tag[0].address", "namespace index `99999` is not a number 0..=65535");
    let d = errors(&tag("plc", "{ table = \"holding\", register = 1 }"));
    one(&d, ADDR, 11, "tag[0].address", "an OPC UA address is a NodeId string");
}

#[test]
fn modbus_addresses() {
    let a = "{ table = \"holding\", register = 100, type = \"f32\", order = \"CDAB\", scale = 0.1 }";
    let c = load(&format!("{BASE}{}", tag("io", a))).expect(a);
    match &c.tags[0].address {
        Some(TagAddress::Modbus(m)) => {
            assert_eq!((m.unit, m.table, m.register), (1, ModbusTable::Holding, 100));
            assert_eq!((m.data_type, m.order, m.word_count()), (ModbusDataType::F32, WordOrder::Cdab, 2));
        }
        other => panic!("{other:?}"),
    }

    let d = errors(&tag("io", "{ table = \"holding\", register = 70000 }"));
    one(&d, ADDR, 43, "tag[0].address.register", "register 70000 is out of range 0..=65535");
    let d = errors(&tag("io", "{ table = \"holding\", register = 65535, type = \"f32\" }"));
    one(
        &d,
        ADDR,
        43,
        "tag[0].address.register",
        "f32 starting at register 65535 spans 2 registers and runs past 65535",
    );
    let d = errors(&tag("io", "{ table = \"coil\", register = 5, type = \"u16\" }"));
    one(&d, ADDR, 50, "tag[0].address.type", "`coil` table holds single bits: type must be \"bool\"");
    let d = errors(&tag("io", "{ table = \"holdin\", register = 5 }"));
    one(
        &d,
        ADDR,
        21,
        "tag[0].address.table",
        "unknown value `holdin`, expected one of `holding`, `input`, `coil`, `discrete`",
    );
    let d = errors(&tag("io", "{ table = \"input\", register = 5, type = \"bool\", bit = 16 }"));
    one(&d, ADDR, 65, "tag[0].address.bit", "bit 16 is out of range 0..=15");
    let d = errors(&tag("io", "{ table = \"input\", register = 5, type = \"string\" }"));
    one(&d, ADDR, 11, "tag[0].address.length", "type \"string\" needs `length`");
    let d = errors(&tag("io", "{ table = \"input\", register = 5, order = \"DCBA\" }"));
    one(&d, ADDR, 52, "tag[0].address.order", "word order swaps need a 32- or 64-bit type");
    let d = errors(&tag("io", "\"ns=2;s=X\""));
    one(&d, ADDR, 11, "tag[0].address", "a Modbus address is a table");

    // Several problems in one address are all reported.
    let d =
        errors(&tag("io", "{ unit = 300, table = \"holding\", register = 1, type = \"f32\", bit = 2, colour = 1 }"));
    assert_eq!(d.len(), 3, "{d:?}");
    is(&d[0], ADDR, 20, "tag[0].address.unit", "unit id 300 is out of range 0..=255");
    is(&d[1], ADDR, 78, "tag[0].address.bit", "`bit` needs type \"bool\", not \"f32\"");
    is(&d[2], ADDR, 81, "tag[0].address.colour", "unknown key `colour`");
}

#[test]
fn modbus_type_must_fit_value_type() {
    let d = errors(&tag("io", "{ table = \"coil\", register = 1 }"));
    one(
        &d,
        ADDR,
        11,
        "tag[0].address",
        "value_type f64 (the default) does not fit Modbus type bool; use value_type = \"bool\"",
    );
    let d =
        errors(&format!("{}value_type = \"i64\"\n", tag("io", "{ table = \"input\", register = 1, type = \"f32\" }")));
    one(&d, B + 7, 14, "tag[0].value_type", "value_type i64 does not fit Modbus type f32");
}

#[test]
fn mqtt_addresses() {
    let a = "{ topic = \"plant/line1/+/vib\", json_path = \"$.rms\", ts_path = \"$.ts\" }";
    let c = load(&format!("{BASE}{}", tag("broker", a))).expect(a);
    match &c.tags[0].address {
        Some(TagAddress::Mqtt(m)) => {
            assert_eq!(m.topic, "plant/line1/+/vib");
            assert_eq!(m.json_path.as_ref().map(|p| p.to_string()).as_deref(), Some("$.rms"));
        }
        other => panic!("{other:?}"),
    }
    let d = errors(&tag("broker", "{ topic = \"plant/#/vib\", json_path = \"rms\" }"));
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], ADDR, 21, "tag[0].address.topic", "`#` must be a whole level and the last one");
    is(&d[1], ADDR, 48, "tag[0].address.json_path", "bad JSON path `rms`: must start with `$`");
    let d = errors(&tag("broker", "{ topic = \"plant/line+/vib\" }"));
    one(&d, ADDR, 21, "tag[0].address.topic", "`+` must be a whole level");
}

#[test]
fn bad_limits_and_states() {
    let d = errors(
        r#"[[tag]]
name = "t"
asset = "filler"
description = "d"
limits = { hh = 4.0, h = 4.5, l = 2.5, ll = 2.0, deadband = -0.1 }
[[tag]]
name = "flag"
asset = "filler"
description = "d"
value_type = "bool"
limits = { h = 1.0 }
states = ["on", "off"]
[[tag]]
name = "state"
asset = "filler"
description = "d"
value_type = "string"
states = ["run", "stop", "run"]
"#,
    );
    assert_eq!(d.len(), 5, "{d:?}");
    is(&d[0], B + 5, 26, "tag[0].limits.h", "h (4.5) is above hh (4); limits must satisfy hh >= h >= l >= ll");
    is(&d[1], B + 5, 61, "tag[0].limits.deadband", "deadband (-0.1) must not be negative");
    is(&d[2], B + 11, 10, "tag[1].limits", "limits apply to f64 and i64 tags, not bool");
    is(&d[3], B + 12, 10, "tag[1].states", "states apply to string tags, not bool");
    is(&d[4], B + 18, 26, "tag[2].states[2]", "state `run` is listed twice");
}

#[test]
fn bad_sources() {
    let d = errors(
        r#"[[source]]
id = "x1"
kind = "profinet"
[[source]]
id = "x2"
endpoint = "tcp://h:502"
[[source]]
id = "x3"
kind = "opcua"
endpoint = "http://plc:4840"
security = { policy = "Basic256Sha256", mode = "None", user = "gw" }
[[source]]
id = "x4"
kind = "modbus"
endpoint = "tcp://plc:70000"
[[source]]
id = "x5"
kind = "mqtt"
url = "mqtt://broker"
password_env = "my secret"
"#,
    );
    assert_eq!(d.len(), 7, "{d:?}");
    let kinds = "unknown source kind, expected one of opcua, modbus, mqtt";
    is(&d[0], B + 3, 8, "source[3].kind", kinds);
    is(&d[1], B + 4, 1, "source[4].kind", "missing key `kind`");
    let scheme = "bad endpoint `http://plc:4840`: scheme `http` is not supported";
    is(&d[2], B + 10, 12, "source[5].endpoint", scheme);
    let mode = "policy `Basic256Sha256` needs mode `Sign` or `SignAndEncrypt`";
    is(&d[3], B + 11, 48, "source[5].security.mode", mode);
    let user = "`user` needs `password_env` or `password_file`";
    is(&d[4], B + 11, 63, "source[5].security.user", user);
    let port = "port `70000` is not a number 1..=65535";
    is(&d[5], B + 15, 12, "source[6].endpoint", port);
    let env = "`my secret` is not an environment variable name";
    is(&d[6], B + 20, 16, "source[7].password_env", env);
}

#[test]
fn sections_must_have_the_right_shape() {
    let d = errors_of("site = \"Plant\"\n[tag]\nname = \"t\"\n");
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], 1, 8, "site", "invalid type: string \"Plant\", expected a table");
    is(&d[1], 2, 1, "tag", "`tag` must be an array of tables, written `[[tag]]`");
}

#[test]
fn independent_errors_are_all_reported() {
    // One problem per entry, in five different entries and kinds: none hides another.
    let text = format!(
        "{BASE}{}",
        r#"[[tag]]
name = "a"
asset = "filler"
description = "d"
source = "io"
address = { table = "holding", register = 70000 }
[[tag]]
name = "b"
asset = "washer"
description = "d"
[[tag]]
name = "c"
asset = "filler"
description = "d"
limits = { h = 5.0, hh = 4.0 }
[[tag]]
name = "d"
asset = "filler"
description = "d"
source = "broker"
address = { topic = "a/#/b" }
[[tag]]
name = "e"
asset = "filler"
unit = 3
description = "d"
"#
    );
    let err = Config::from_str_named(&text, "plant.toml").expect_err("five errors");
    let d = err.diagnostics();
    assert_eq!(d.len(), 5, "{err}");
    is(&d[0], B + 6, 43, "tag[0].address.register", "out of range");
    is(&d[1], B + 9, 9, "tag[1].asset", "unknown asset `washer`");
    is(&d[2], B + 15, 16, "tag[2].limits.h", "is above hh");
    is(&d[3], B + 21, 21, "tag[3].address.topic", "`#` must be");
    is(&d[4], B + 25, 8, "tag[4].unit", "invalid type");
    // Display: one diagnostic per line, FILE:LINE:COL: KEY: MESSAGE.
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0],
        format!("plant.toml:{}:43: tag[0].address.register: register 70000 is out of range 0..=65535", B + 6)
    );
    assert!(lines[1].starts_with(&format!("plant.toml:{}:9: tag[1].asset: unknown asset `washer`", B + 9)));
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("line.toml");
    std::fs::write(&path, "[site]\nname = 1\n").expect("write");
    let err = Config::load(&path).expect_err("bad type");
    let d = err.diagnostics();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].file, path.display().to_string());
    assert_eq!((d[0].line, d[0].column, d[0].key.as_str()), (2, 8, "site.name"));

    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).expect_err("no file");
    assert!(matches!(err, ConfigErrors::Read { .. }));
    assert!(err.diagnostics().is_empty());
    assert!(err.to_string().contains("nope.toml: cannot read config"));
}

#[test]
fn bad_deadbands_and_opcua_only_keys() {
    let d = errors(
        r#"[[tag]]
name = "flag"
asset = "filler"
description = "d"
value_type = "bool"
deadband = 1.0
[[tag]]
name = "level"
asset = "filler"
source = "io"
address = { table = "holding", register = 1 }
description = "d"
deadband = -2.0
deadband_percent = 5.0
sampling_interval = "100ms"
[[tag]]
name = "pressure"
asset = "filler"
source = "plc"
address = "ns=2;s=P"
description = "d"
deadband_percent = 120.0
sampling_interval = "0s"
"#,
    );
    let listing: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 6, "{}", listing.join("\n"));
    is(&d[0], B + 6, 12, "tag[0].deadband", "deadband applies to f64 and i64 tags, not bool");
    is(&d[1], B + 13, 12, "tag[1].deadband", "deadband (-2) must be a number >= 0");
    is(&d[2], B + 14, 20, "tag[1].deadband_percent", "deadband_percent applies to tags of an opcua source");
    is(&d[3], B + 15, 21, "tag[1].sampling_interval", "sampling_interval applies to tags of an opcua source");
    is(&d[4], B + 22, 20, "tag[2].deadband_percent", "deadband_percent (120) must be within 0..=100");
    is(&d[5], B + 23, 21, "tag[2].sampling_interval", "sampling_interval must be more than 0");

    // The same keys, well formed, load.
    let ok = format!(
        "{BASE}{}",
        r#"[[tag]]
name = "pressure"
asset = "filler"
source = "plc"
address = "ns=2;s=P"
description = "d"
deadband_percent = 1.5
sampling_interval = "100ms"
[[tag]]
name = "level"
asset = "filler"
source = "io"
address = { table = "holding", register = 1 }
description = "d"
deadband = 0.5
"#
    );
    let c = load(&ok).expect("loads");
    assert_eq!(c.tags[0].deadband_percent, Some(1.5));
    assert_eq!(c.tags[0].sampling_interval.map(|s| s.0), Some(std::time::Duration::from_millis(100)));
    assert_eq!(c.tags[1].deadband, Some(0.5));
}

#[test]
fn opcua_poll_mode_and_certificate_identity() {
    let text = BASE.replace(
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\n",
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\nmode = \"poll\"\npoll_interval = \"2s\"\nsecurity = { policy = \"Basic256Sha256\", mode = \"Sign\", user_cert = \"u.der\", user_key = \"u.pem\" }\n",
    );
    let c = load(&text).expect("loads");
    let SourceConfig::OpcUa(o) = &c.sources[0] else { panic!("opcua first") };
    assert_eq!(o.mode, OpcUaMode::Poll);
    assert_eq!(o.poll_interval.0, std::time::Duration::from_secs(2));
    assert_eq!(o.security.user_cert.as_deref(), Some(std::path::Path::new("u.der")));

    let text = BASE.replace(
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\n",
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\nmode = \"pull\"\nsecurity = { policy = \"Basic256Sha256\", mode = \"Sign\", user_cert = \"u.der\" }\n",
    );
    let d = errors_of(&text);
    let listing: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 2, "{}", listing.join("\n"));
    assert!(listing[0].contains("source[0].mode") && listing[0].contains("`pull`"), "{}", listing[0]);
    assert!(listing[1].contains("security.user_cert") && listing[1].contains("needs `user_key`"), "{}", listing[1]);

    let text = BASE.replace(
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\n",
        "endpoint = \"opc.tcp://127.0.0.1:4840\"\nmode = \"poll\"\nevents = true\n",
    );
    let d = errors_of(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].key.ends_with("events") && d[0].message.contains("need mode = \"subscribe\""), "{d:?}");
}

#[test]
fn mqtt_topic_labels() {
    let c = load(&format!(
        "{BASE}{}",
        tag(
            "broker",
            "{ topic = \"plant/+/+/vib\", json_path = \"$.rms\", labels = { line = \"{2}\", machine = \"m-{3}\" } }"
        )
    ))
    .expect("loads");
    let Some(TagAddress::Mqtt(a)) = &c.tags[0].address else { panic!("mqtt address") };
    let levels = ["plant", "line1", "filler", "vib"];
    let filled: Vec<(String, String)> = a.labels.iter().map(|(k, t)| (k.clone(), t.fill(&levels))).collect();
    assert_eq!(filled, [("line".to_string(), "line1".to_string()), ("machine".to_string(), "m-filler".to_string())]);

    for (labels, msg) in [
        ("{ machine = \"{4}\" }", "level 4 of the topic is `vib`, not a `+` wildcard"),
        ("{ machine = \"{9}\" }", "the topic has no level 9"),
        ("{ machine = \"{x}\" }", "`{x}` is not a topic level number"),
        ("{ machine = \"{2\" }", "`{` without `}`"),
        ("{ \"ma-chine\" = \"{2}\" }", "label name `ma-chine` must be letters, digits and `_`"),
    ] {
        let d = errors(&tag("broker", &format!("{{ topic = \"plant/+/+/vib\", labels = {labels} }}")));
        assert_eq!(d.len(), 1, "{labels}: {d:?}");
        assert_eq!(d[0].key, "tag[0].address.labels", "{labels}");
        assert!(d[0].message.contains(msg), "{labels}: {}", d[0].message);
    }
}

#[test]
fn shift_calendar_and_asset_state_errors() {
    let d = errors(
        r#"[[asset]]
id = "capper"
name = "Capper"
line = "l1"
kind = "capper"
state = { tag = "capper.stat", codes = { 1 = "running" } }
counters = { reject = "capper.state" }
[[tag]]
name = "capper.state"
asset = "capper"
description = "state"
value_type = "i64"
[[shift]]
name = "A"
start = "06:00"
end = "25:00"
[[shift]]
name = "B"
start = "14:00"
end = "22:00"
breaks = [{ start = "23:00", minutes = 30 }]
[[planned_stop]]
reason = "x"
from = "2026-12-24T14:00"
[[asset]]
id = "labeler"
name = "Labeler"
line = "l1"
kind = "labeler"
state = { tag = "capper.state", codes = { 1 = "runing" } }
"#,
    );
    let listing: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 6, "{}", listing.join("\n"));
    is(&d[0], B + 6, 17, "asset[1].state.tag", "unknown tag `capper.stat`; did you mean `capper.state`?");
    is(&d[1], B + 7, 12, "asset[1].counters.good", "counters need `good` or `total`");
    is(&d[2], B + 16, 7, "shift[0].end", "bad time of day `25:00`");
    is(&d[3], B + 21, 10, "shift[1].breaks", "the break at 23:00 for 30 min is not within the shift 14:00-22:00");
    assert_eq!((d[4].key.as_str(), d[4].line), ("planned_stop[0].to", B + 22));
    assert!(d[4].message.contains("missing key `to`"), "{}", d[4]);
    is(&d[5], B + 30, 47, "asset[2].state.codes.1", "unknown value `runing`");
}

#[test]
fn unknown_time_zone_and_key_asset_off_the_line() {
    let text = BASE
        .replace("name = \"Plant\"", "name = \"Plant\"\ntime_zone = \"Mars/Olympus_Mons\"")
        .replace("area = \"a1\"\n[[asset]]", "area = \"a1\"\nkey_asset = \"washer\"\n[[asset]]");
    let d = errors_of(&text);
    let listing: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 2, "{}", listing.join("\n"));
    is(&d[0], 3, 13, "site.time_zone", "time zone `Mars/Olympus_Mons`");
    is(&d[1], 11, 13, "line[0].key_asset", "unknown asset `washer`");
}

#[test]
fn llm_section_defaults_and_errors() {
    assert!(load(BASE).expect("base loads").llm.is_none(), "no model unless configured");
    let c = load(&format!("{BASE}[llm]\n")).expect("loads");
    let llm = c.llm.expect("an [llm] section");
    assert_eq!((llm.local_model.as_str(), llm.threads), ("smollm2-135m", 1));
    assert!(llm.cloud.is_none(), "no cloud unless configured");
    let ex = load(crate::config::EXAMPLE).expect("example loads");
    assert_eq!(ex.llm.and_then(|l| l.cloud).map(|c| c.model), Some("qwen-plus".to_string()));

    let d = errors("[llm]\nlocal_model = \"gpt-5\"\n");
    one(&d, B + 2, 15, "llm.local_model", "unknown model `gpt-5`");
    let d = errors("[llm]\nescalation = \"sometimes\"\n");
    one(&d, B + 2, 14, "llm.escalation", "unknown value `sometimes`");
    let d = errors("[llm.cloud]\nbase_url = \"http://example.com/v1\"\n");
    one(&d, B + 2, 12, "llm.cloud.base_url", "use https://");
}

#[test]
fn asset_kinds_are_checked_against_the_plant() {
    let tag = "[[tag]]\nname = \"filler.vib\"\nasset = \"filler\"\nsource = \"plc\"\naddress = \"ns=2;s=V\"\ndescription = \"Vibration\"\n";
    let good = format!(
        "{BASE}{tag}[[asset_kind]]\nkind = \"filler\"\nhours_tag = \"vib\"\n\
         [[asset_kind.failure_mode]]\nid = \"wear\"\nname = \"Wear\"\ntags = [\"vib\"]\nfailure_limit = 7.1\n\
         [[asset_kind.service]]\naction = \"Grease\"\nevery_hours = 500\nprevents = \"wear\"\n"
    );
    let c = load(&good).expect("valid asset kind");
    let k = c.asset_kind_of("filler").expect("the filler's kind");
    assert_eq!(k.modes_for_tag("filler", "filler.vib").count(), 1);
    assert_eq!(k.services[0].every_hours, Some(500.0));

    // A kind no asset has, with a suggestion.
    let d = errors(&format!("{tag}[[asset_kind]]\nkind = \"filer\"\n"));
    one(&d, B + 8, 8, "asset_kind[0].kind", "no [[asset]] has kind `filer`; did you mean `filler`?");
    // A tag suffix no asset of the kind has.
    let d = errors(&format!(
        "{tag}[[asset_kind]]\nkind = \"filler\"\n[[asset_kind.failure_mode]]\nid = \"w\"\nname = \"W\"\ntags = [\"vibe\"]\n"
    ));
    one(&d, B + 12, 9, "asset_kind[0].failure_mode[0].tags[0]", "no tag `<asset>.vibe` on any asset of kind `filler`");
    // A service with no interval, and one that prevents an unknown failure mode.
    let d = errors(&format!(
        "{tag}[[asset_kind]]\nkind = \"filler\"\n[[asset_kind.service]]\naction = \"Grease\"\n\
         [[asset_kind.service]]\naction = \"Oil\"\nevery_cycles = 1000\nprevents = \"leak\"\n"
    ));
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], B + 9, 1, "asset_kind[0].service[0]", "needs `every_hours` or `every_cycles`");
    is(&d[1], B + 14, 12, "asset_kind[0].service[1].prevents", "no failure mode `leak` on this kind");
}

#[test]
fn agents_publish_needs_an_mqtt_source() {
    let c = load(&format!("{BASE}[agents]\npublish = {{ source = \"broker\" }}\n")).expect("valid");
    assert_eq!(c.agents.publish.as_ref().map(|p| p.topic.as_str()), Some("linepilot"));
    let d = errors("[agents]\npublish = { source = \"plc\", topic = \"x\" }\n");
    one(&d, B + 2, 22, "agents.publish.source", "source `plc` is opcua, not mqtt");
    let d = errors("[agents]\npublish = { source = \"brokr\", topic = \"a/#\" }\n");
    assert_eq!(d.len(), 2, "{d:?}");
    is(&d[0], B + 2, 22, "agents.publish.source", "unknown source `brokr`");
    is(&d[1], B + 2, 39, "agents.publish.topic", "plain prefix");
}
