use super::*;

#[test]
fn example_loads() {
    let c = match Config::from_str_named(EXAMPLE, "example.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.tags.len(), 11);
}

#[test]
fn explore() {
    let text = r#"
[site]
name = "x"
time_zone = "Mars/Base"

[[area]]
id = "a"
name = "A"
bogus = 1

[[line]]
id = "l"
name = "L"
area = "b"

[[asset]]
id = "f"
name = 7
line = "l"

[[source]]
id = "s"
kind = "modbus"
endpoint = "tcp://h:502"

[[tag]]
name = "t"
asset = "f"
source = "s"
address = { table = "holding", register = 70000 }
description = "d"
limits.h = 5
limits.hh = 4

[[tag]]
asset = "f"
description = "d"
[tag.limits]
h = 5
hh = 4
"#;
    match Config::from_str_named(text, "x.toml") {
        Ok(_) => panic!("ok?"),
        Err(e) => println!("{e}"),
    }
}
