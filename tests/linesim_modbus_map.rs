//! The simulator's Modbus register map (`linesim map modbus`) loads as gateway
//! `[[tag]]` tables unchanged, and every address means what the simulator serves.

use linepilot::config::{Config, ModbusDataType, ModbusTable, TagAddress, WordOrder};
use linesim::line::{self, Binding, Catalog, PlcType, Table};
use linesim::server::modbus::{register_map, MAP_SOURCE};

#[test]
fn register_map_loads_in_the_gateway_config() {
    let (catalog, _) = Catalog::build();
    let mut assets: Vec<&str> = Vec::new();
    for t in &catalog.tags {
        if matches!(t.binding, Binding::Modbus(_)) && !assets.contains(&t.asset) {
            assets.push(t.asset);
        }
    }
    let mut text = String::from(
        "[site]\nname = \"Plant\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
    );
    for a in &assets {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"{MAP_SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://127.0.0.1:5020\"\n"
    ));
    text.push_str(&register_map(&catalog));

    let config = match Config::from_str_named(&text, "linesim-modbus.toml") {
        Ok(c) => c,
        Err(e) => panic!("the register map does not load:\n{e}"),
    };
    let modbus: Vec<_> = catalog
        .tags
        .iter()
        .filter_map(|t| match &t.binding {
            Binding::Modbus(r) => Some((t, r)),
            _ => None,
        })
        .collect();
    assert_eq!(config.tags.len(), modbus.len());
    for (tag, (t, r)) in config.tags.iter().zip(&modbus) {
        assert_eq!(tag.name, t.name);
        assert_eq!(tag.unit, t.unit);
        let Some(TagAddress::Modbus(a)) = &tag.address else { panic!("{}: not a modbus address", t.name) };
        assert_eq!(a.unit, r.unit, "{}", t.name);
        assert_eq!(a.register, r.address, "{}", t.name);
        let table = match r.table {
            Table::Coil => ModbusTable::Coil,
            Table::Discrete => ModbusTable::Discrete,
            Table::Holding => ModbusTable::Holding,
            Table::Input => ModbusTable::Input,
        };
        assert_eq!(a.table, table, "{}", t.name);
        let ty = match r.ty {
            PlcType::Bool => ModbusDataType::Bool,
            PlcType::U16 => ModbusDataType::U16,
            PlcType::I16 => ModbusDataType::I16,
            PlcType::U32 => ModbusDataType::U32,
            PlcType::I32 => ModbusDataType::I32,
            PlcType::F32 => ModbusDataType::F32,
            PlcType::F64 => ModbusDataType::F64,
        };
        assert_eq!(a.data_type, ty, "{}", t.name);
        assert_eq!(a.word_count(), u32::from(r.width()), "{}", t.name);
        if a.data_type != ModbusDataType::Bool {
            let order = match r.order {
                line::WordOrder::Abcd => WordOrder::Abcd,
                line::WordOrder::Cdab => WordOrder::Cdab,
            };
            assert_eq!(a.order, order, "{}", t.name);
        }
        assert_eq!(a.scale.unwrap_or(1.0), r.scale, "{}", t.name);
        assert_eq!(a.offset, None, "{}", t.name);
    }
}

/// `configs/linesim/modbus-map.toml` is what `linesim map modbus` prints today.
#[test]
fn committed_register_map_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/linesim/modbus-map.toml");
    let committed = std::fs::read_to_string(path).expect("configs/linesim/modbus-map.toml");
    let generated = register_map(&Catalog::build().0);
    assert!(
        committed == generated,
        "configs/linesim/modbus-map.toml is stale: regenerate it with\n  cargo run -p linesim -- map modbus > configs/linesim/modbus-map.toml"
    );
}

/// Every Modbus tag of the example config addresses what the simulator serves under that name.
#[test]
fn example_config_modbus_tags_follow_the_map() {
    let example = Config::from_str_named(linepilot::config::EXAMPLE, "example.toml").expect("example loads");
    let (catalog, _) = Catalog::build();
    let mut checked = 0;
    for tag in &example.tags {
        let Some(TagAddress::Modbus(a)) = &tag.address else { continue };
        let i = catalog.find(&tag.name).unwrap_or_else(|| panic!("{}: not a linesim tag", tag.name));
        let Binding::Modbus(r) = &catalog.tags[i].binding else { panic!("{}: not on Modbus in linesim", tag.name) };
        assert_eq!((a.unit, a.register), (r.unit, r.address), "{}", tag.name);
        assert_eq!(a.scale.unwrap_or(1.0), r.scale, "{}", tag.name);
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} modbus tags in the example");
}

/// `configs/demo.toml` is what `linesim map gateway` prints for the demo scenario,
/// and it loads: every simulator tag over its protocol.
#[test]
fn demo_config_is_current_and_loads() {
    let root = env!("CARGO_MANIFEST_DIR");
    let scenario =
        linesim::line::scenario::Scenario::load(std::path::Path::new(&format!("{root}/configs/scenarios/demo.toml")))
            .expect("demo scenario");
    let catalog = Catalog::build().0;
    let generated = linesim::server::gateway::gateway_config(&catalog, &scenario);
    let committed = std::fs::read_to_string(format!("{root}/configs/demo.toml")).expect("configs/demo.toml");
    assert!(
        committed == generated,
        "configs/demo.toml is stale: regenerate it with\n  cargo run -p linesim -- map gateway > configs/demo.toml"
    );
    let config = Config::from_str_named(&committed, "demo.toml").unwrap_or_else(|e| panic!("demo.toml:\n{e}"));
    assert_eq!(config.tags.len(), catalog.len());
    for t in &config.tags {
        assert!(catalog.find(&t.name).is_some(), "{} is not a simulator tag", t.name);
    }
}
