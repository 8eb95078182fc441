//! MQTT over TLS against Debian's mosquitto, with certificates made here by
//! the `openssl` command line (a CA, the broker's certificate for 127.0.0.1,
//! a client certificate, and a second, unrelated CA):
//!
//! - with `ca_file` + `client_cert` + `client_key` the source connects over
//!   `mqtts://` to a broker that requires client certificates, and a value
//!   published on the broker's plain listener lands in the store;
//! - without a client certificate the broker refuses the gateway; with the
//!   wrong CA the gateway refuses the broker: both show in health as a down
//!   source with the reason, and nothing crashes.
//!
//! Needs `mosquitto` and `openssl` (Debian packages; `.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{openssl, self_signed, Gateway};
use linepilot::config::Config;
use linepilot::domain::SeriesKey;
use linepilot::ingest::SourceState;
use linepilot::store::points::Column;
use linepilot::store::Store;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// A CA (`NAME-ca.pem`/`.key`); [`leaf`] makes the certificates it signs.
fn ca(dir: &Path, name: &str) {
    self_signed(dir, &format!("{name} test CA"), &format!("{name}-ca.key"), &format!("{name}-ca.pem"));
}

fn leaf(dir: &Path, ca: &str, leaf: &str, cn: &str, san: Option<&str>) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
        ],
    );
    let (csr, ca_pem, ca_key, out) =
        (format!("{leaf}.csr"), format!("{ca}-ca.pem"), format!("{ca}-ca.key"), format!("{leaf}.pem"));
    let mut args: Vec<String> =
        ["x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2", "-out", &out]
            .iter()
            .map(|s| s.to_string())
            .collect();
    // X.509 v3 (extensions), as webpki requires: a server name, or client use.
    let ext = match san {
        Some(san) => format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
        None => "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n".to_string(),
    };
    std::fs::write(dir.join(format!("{leaf}.ext")), ext).expect("ext file");
    args.extend(["-extfile".to_string(), format!("{leaf}.ext")]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &refs);
}

struct Broker {
    child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

/// mosquitto with a TLS listener that requires client certificates, and a plain one.
fn broker(dir: &Path, tls_port: u16, plain_port: u16) -> Broker {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("this test needs Debian's mosquitto broker: apt-get install mosquitto (.ci/run installs it)");
    let conf = dir.join("mosquitto.conf");
    // `user root`: started as root, mosquitto would switch to its own user, which
    // cannot read the key in the test's private temp dir (no effect for other users).
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\nuser root\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {d}/plant-ca.pem\ncertfile {d}/broker.pem\nkeyfile {d}/broker.key\n\
             require_certificate true\n",
            d = dir.display()
        ),
    )
    .expect("mosquitto.conf");
    let log = std::fs::File::create(dir.join("mosquitto.log")).expect("log file");
    let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn().expect("mosquitto");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not start:\n{}",
            std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child }
}

fn config(dir: &Path, tls_port: u16, sources: &[(&str, &str)]) -> Config {
    let mut text = format!(
        "[site]\nname = \"Plant\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n\
         [[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n[[asset]]\nid = \"a\"\nname = \"A\"\nline = \"line1\"\nkind = \"a\"\n",
        dir.join("data").display()
    );
    for (id, tls) in sources {
        text.push_str(&format!("[[source]]\nid = \"{id}\"\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nkeep_alive = \"5s\"\n{tls}\n"));
        text.push_str(&format!(
            "[[tag]]\nname = \"{id}.temp\"\nasset = \"a\"\nsource = \"{id}\"\ndescription = \"t\"\naddress = {{ topic = \"tls/temp\" }}\n"
        ));
    }
    Config::from_str_named(&text, "tls.toml").unwrap_or_else(|e| panic!("config:\n{e}\n{text}"))
}

fn values(store: &Store, name: &str) -> Vec<f64> {
    let Some((id, _)) = store.catalog().lookup(&SeriesKey::new(name.to_string())) else { return Vec::new() };
    match store.range(id, i64::MIN, i64::MAX).expect("range").values {
        Column::F64(v) => v,
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtts_with_client_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    ca(d, "plant");
    ca(d, "other");
    leaf(d, "plant", "broker", "broker", Some("IP:127.0.0.1,DNS:localhost"));
    leaf(d, "plant", "gateway", "linepilot-gateway", None);
    let (tls_port, plain_port) = (free_port(), free_port());
    let _broker = broker(d, tls_port, plain_port);

    let p = |f: &str| d.join(f).display().to_string();
    let good = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        p("plant-ca.pem"),
        p("gateway.pem"),
        p("gateway.key")
    );
    let no_client_cert = format!("ca_file = \"{}\"", p("plant-ca.pem"));
    let wrong_ca = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        p("other-ca.pem"),
        p("gateway.pem"),
        p("gateway.key")
    );
    let config = config(d, tls_port, &[("good", &good), ("nocert", &no_client_cert), ("wrongca", &wrong_ca)]);
    let gw = Gateway::start(&config);
    let store = gw.store.clone();
    let snap = |id: &str| gw.source(id);

    let started = Instant::now();
    while snap("good").state != SourceState::Connected {
        assert!(started.elapsed() < Duration::from_secs(30), "TLS source connects: {:?}", snap("good"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // SUBACK

    // A value published on the plain listener arrives through TLS.
    let (client, mut events) = AsyncClient::new(MqttOptions::new("tls-test-publisher", "127.0.0.1", plain_port), 10);
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client.publish("tls/temp", QoS::AtLeastOnce, false, b"21.5".to_vec()).await.expect("publish");
    let started = Instant::now();
    while !values(&store, "good.temp").contains(&21.5) {
        assert!(started.elapsed() < Duration::from_secs(20), "the value arrives over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The other two never connect, and say why.
    for id in ["nocert", "wrongca"] {
        let s = snap(id);
        assert_ne!(s.state, SourceState::Connected, "{id}: {s:?}");
        assert!(values(&store, &format!("{id}.temp")).is_empty(), "{id} stored nothing");
        assert!(s.last_error.is_some(), "{id}: the reason is in health: {s:?}");
    }
    let wrong = snap("wrongca").last_error.unwrap_or_default();
    assert!(wrong.to_lowercase().contains("certificate") || wrong.contains("UnknownIssuer"), "wrong CA: {wrong}");
    eprintln!("nocert: {:?}\nwrongca: {wrong}", snap("nocert").last_error);

    gw.stop().await;
    pump.abort();
}
