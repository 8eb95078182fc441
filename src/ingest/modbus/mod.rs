//! Modbus driver (Modbus TCP, and RTU frames over TCP): polls a device's
//! registers and coils and turns them into samples.
//!
//! - [`plan`]: per unit id and table, the tags' ranges are coalesced into as few
//!   reads as possible (gap ≤ `max_gap`, ≤ 125 registers / 2000 bits per read).
//! - [`decode`]: registers and bits become values (type, byte/word order, bit,
//!   scale, offset); a non-finite float is `BAD_DECODING`.
//! - [`run`]: the poll loop. Tags poll every `poll_interval`, or at the
//!   interval of the first of the source's `poll_groups` that names them; each
//!   group has its own plan. Every cycle each planned read of a group runs with
//!   the unit id set per request and a per-request `timeout`; samples carry the
//!   cycle's poll time. An exception answer marks exactly the tags of that read
//!   `modbus_exception(code)` and is counted in health (no reconnect). A read
//!   that times out is retried once; if it times out again its unit's tags are
//!   `BAD_TIMEOUT` and the unit's other reads are skipped for this cycle (one
//!   silent unit does not hold the others up). Only a broken connection, or a
//!   cycle in which no unit answered at all, drops the connection: it is then
//!   re-established with [`Backoff`], recording `comms_lost` once per outage
//!   and `comms_restored` at the first answer afterwards.

pub mod decode;
pub mod plan;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::client::{Client as _, Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_serial::SerialPortBuilderExt as _;
use tracing::{debug, info, warn};

use self::plan::ReadRequest;
use super::{Backoff, IngestError, SourceCtx, SourceState};
use crate::config::{ModbusAddress, ModbusEndpoint, ModbusSourceConfig, ModbusTable, Parity, SourceConfig, TagAddress};
use crate::domain::{now_ns, Quality, Sample, Timestamp};

/// What one read request gave.
enum Outcome {
    /// Register values.
    Words(Vec<u16>),
    /// Coil or discrete-input values.
    Bits(Vec<bool>),
    /// The device answered with an exception.
    Exception(u8),
    /// No answer within the timeout.
    Timeout,
    /// The connection is broken (or out of step); the reason.
    Broken(String),
}

/// Tags polled at one interval, and their reads.
struct Group {
    interval: Duration,
    plan: Vec<ReadRequest>,
}

/// The source's settings the poll loop needs, and its plan per poll group.
struct Poller {
    addrs: Vec<Option<ModbusAddress>>,
    groups: Vec<Group>,
    timeout: Duration,
}

/// How one poll cycle of a group went.
struct Cycle {
    /// Some unit answered (data or exception).
    answered: bool,
    /// The connection broke; the reason.
    broken: Option<String>,
    /// Samples sent.
    samples: usize,
}

/// Runs a Modbus source until shutdown.
pub async fn run(mut ctx: SourceCtx) -> Result<(), IngestError> {
    let SourceConfig::Modbus(cfg) = ctx.config.clone() else {
        return Err(IngestError::Config(format!("source {} is not a Modbus source", ctx.id())));
    };
    let poller = Poller::new(&ctx, &cfg);
    info!(source = ctx.id(), endpoint = %cfg.endpoint, tags = ctx.tags.len(), reads = poller.reads(), groups = poller.groups.len(), "modbus source planned");

    let mut backoff = Backoff::new(Duration::from_secs(30));
    // True from the recorded comms loss until the first answer afterwards.
    let mut lost = false;
    loop {
        if ctx.stopping() {
            return Ok(());
        }
        let reason = match connect(&cfg.endpoint, poller.timeout.max(Duration::from_secs(1))).await {
            Ok(client) => {
                debug!(source = ctx.id(), endpoint = %cfg.endpoint, "modbus connected");
                match poller.poll(&mut ctx, client, &mut lost, &mut backoff).await {
                    Ok(reason) => reason,
                    Err(IngestError::Shutdown) => return Ok(()),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e,
        };
        warn!(source = ctx.id(), error = %reason, "modbus connection lost; reconnecting after a backoff");
        if lost {
            ctx.health.set_state(SourceState::Down, Some(reason));
        } else {
            ctx.comms_lost(now_ns(), Quality::BAD_COMMS, &reason).await;
            lost = true;
        }
        ctx.health.count_reconnect();
        if ctx.sleep(backoff.next_delay()).await.is_err() {
            return Ok(());
        }
    }
}

/// Opens the connection to a Modbus device: Modbus TCP, RTU frames over TCP
/// (serial device servers), or RTU on a serial line.
async fn connect(endpoint: &ModbusEndpoint, timeout: Duration) -> Result<Context, String> {
    let (host, port, rtu) = match endpoint {
        ModbusEndpoint::Tcp { host, port } => (host.as_str(), *port, false),
        ModbusEndpoint::RtuOverTcp { host, port } => (host.as_str(), *port, true),
        ModbusEndpoint::Rtu { device, baud, parity, stop_bits } => {
            let parity = match parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            };
            let stop = if *stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
            let port = tokio_serial::new(device.to_string_lossy(), *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(parity)
                .stop_bits(stop)
                .flow_control(tokio_serial::FlowControl::None)
                .timeout(timeout)
                .open_native_async()
                .map_err(|e| format!("cannot open {}: {e}", device.display()))?;
            return Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)));
        }
    };
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
            .collect();
        let mut last = format!("{host}:{port} resolves to no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) if rtu => return Ok(tokio_modbus::client::rtu::attach_slave(stream, Slave(1))),
                Ok(stream) => return Ok(tokio_modbus::client::tcp::attach(stream)),
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("connecting to {host}:{port} timed out after {timeout:?}")),
    }
}

/// A Modbus source's poll cycle outside the poll loop, for benchmarks and
/// tools: the same plan, reads, decoding and sink as [`run`], one cycle per
/// call, with no pacing, reconnection or health transitions.
pub struct CyclePoller {
    poller: Poller,
    client: Context,
}

impl CyclePoller {
    /// Plans `ctx`'s tags and connects to its TCP (or RTU-over-TCP) endpoint.
    pub async fn connect(ctx: &SourceCtx) -> Result<CyclePoller, IngestError> {
        let SourceConfig::Modbus(cfg) = &ctx.config else {
            return Err(IngestError::Config(format!("source {} is not a Modbus source", ctx.id())));
        };
        let poller = Poller::new(ctx, cfg);
        let client = connect(&cfg.endpoint, poller.timeout.max(Duration::from_secs(1)))
            .await
            .map_err(IngestError::Connection)?;
        Ok(CyclePoller { poller, client })
    }

    /// The planned reads of one cycle (every poll group).
    pub fn plan(&self) -> Vec<ReadRequest> {
        self.poller.groups.iter().flat_map(|g| g.plan.iter().cloned()).collect()
    }

    /// Runs every planned read once, as the poll loop does, and sends the
    /// samples to `ctx.sink`; returns how many samples were sent.
    pub async fn poll_once(&mut self, ctx: &SourceCtx) -> Result<usize, IngestError> {
        let mut sent = 0;
        for group in &self.poller.groups {
            let cycle = self.poller.cycle(ctx, &mut self.client, group, now_ns()).await?;
            if let Some(reason) = cycle.broken {
                return Err(IngestError::Connection(reason));
            }
            sent += cycle.samples;
        }
        Ok(sent)
    }
}

impl Poller {
    fn new(ctx: &SourceCtx, cfg: &ModbusSourceConfig) -> Poller {
        let addrs: Vec<Option<ModbusAddress>> = ctx
            .tags
            .iter()
            .map(|t| match &t.tag.address {
                Some(TagAddress::Modbus(a)) => Some(a.clone()),
                _ => {
                    warn!(source = ctx.id(), tag = %t.tag.name, "tag has no Modbus address; not polled");
                    None
                }
            })
            .collect();
        // Group 0 is `poll_interval`; group g + 1 is `poll_groups[g]`.
        let mut members: Vec<Vec<(usize, &ModbusAddress)>> = vec![Vec::new(); cfg.poll_groups.len() + 1];
        for (i, a) in addrs.iter().enumerate() {
            let Some(a) = a else { continue };
            let name = &ctx.tags[i].tag.name;
            let g = cfg.poll_groups.iter().position(|g| g.matches(name)).map_or(0, |g| g + 1);
            members[g].push((i, a));
        }
        let intervals = std::iter::once(cfg.poll_interval.0).chain(cfg.poll_groups.iter().map(|g| g.interval.0));
        let groups = members
            .iter()
            .zip(intervals)
            .filter(|(m, _)| !m.is_empty())
            .map(|(m, interval)| Group { interval, plan: plan::plan(m, cfg.max_gap) })
            .collect();
        Poller { addrs, groups, timeout: cfg.timeout.0 }
    }

    /// Reads in one poll cycle, over all groups.
    fn reads(&self) -> usize {
        self.groups.iter().map(|g| g.plan.len()).sum()
    }

    /// Polls over one connection until it breaks (Ok(reason)) or the daemon stops.
    async fn poll(
        &self,
        ctx: &mut SourceCtx,
        mut client: Context,
        lost: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<String, IngestError> {
        let mut shutdown = ctx.shutdown.clone();
        let start = tokio::time::Instant::now();
        let mut due: Vec<tokio::time::Instant> = vec![start; self.groups.len()];
        loop {
            let Some(next) = due.iter().min().copied() else {
                // No tags: nothing to poll, stay connected until shutdown.
                ctx.comms_restored(now_ns());
                let _ = shutdown.wait_for(|s| *s).await;
                return Err(IngestError::Shutdown);
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.wait_for(|s| *s) => return Err(IngestError::Shutdown),
            }
            for (g, group) in self.groups.iter().enumerate() {
                let now = tokio::time::Instant::now();
                if due[g] > now {
                    continue;
                }
                // The next poll is one interval on; a cycle that overran starts the count again.
                due[g] = (due[g] + group.interval).max(now);
                let ts = now_ns();
                let cycle = self.cycle(ctx, &mut client, group, ts).await?;
                if cycle.answered && (*lost || ctx.health.state() != SourceState::Connected) {
                    ctx.comms_restored(ts);
                    *lost = false;
                    backoff.reset();
                }
                if let Some(reason) = cycle.broken {
                    return Ok(reason);
                }
                if !cycle.answered && !group.plan.is_empty() {
                    let _ = client.disconnect().await;
                    return Ok(format!("no unit answered within {:?} (twice)", self.timeout));
                }
            }
        }
    }

    /// Runs the reads of one group once and sends their samples, stamped `ts`.
    async fn cycle(
        &self,
        ctx: &SourceCtx,
        client: &mut Context,
        group: &Group,
        ts: Timestamp,
    ) -> Result<Cycle, IngestError> {
        let mut samples: Vec<Sample> = Vec::with_capacity(ctx.tags.len());
        let mut silent_units: HashSet<u8> = HashSet::new();
        let mut answered = false;
        let mut broken = None;
        for req in &group.plan {
            if silent_units.contains(&req.unit) {
                self.mark(ctx, req, ts, Quality::BAD_TIMEOUT, &mut samples);
                continue;
            }
            let mut outcome = self.read(client, req).await;
            if matches!(outcome, Outcome::Timeout) {
                debug!(source = ctx.id(), unit = req.unit, start = req.start, "modbus read timed out; retrying once");
                outcome = self.read(client, req).await;
            }
            match outcome {
                Outcome::Words(words) => {
                    answered = true;
                    self.decode_words(ctx, req, &words, ts, &mut samples);
                }
                Outcome::Bits(bits) => {
                    answered = true;
                    self.decode_bits(ctx, req, &bits, ts, &mut samples);
                }
                Outcome::Exception(code) => {
                    answered = true;
                    let msg = format!(
                        "unit {} {:?} {}+{}: exception 0x{code:02X}",
                        req.unit, req.table, req.start, req.count
                    );
                    debug!(source = ctx.id(), unit = req.unit, code, "modbus exception");
                    ctx.health.error(msg);
                    self.mark(ctx, req, ts, Quality::modbus_exception(code), &mut samples);
                }
                Outcome::Timeout => {
                    let msg = format!("unit {}: no answer within {:?}", req.unit, self.timeout);
                    warn!(source = ctx.id(), unit = req.unit, "modbus unit does not answer");
                    ctx.health.error(msg);
                    silent_units.insert(req.unit);
                    self.mark(ctx, req, ts, Quality::BAD_TIMEOUT, &mut samples);
                }
                Outcome::Broken(reason) => {
                    broken = Some(reason);
                    break;
                }
            }
        }
        // What was read goes out before a broken connection is reported, so
        // `comms_lost`'s samples come after it.
        let sent = samples.len();
        ctx.sink.send(samples).await.map_err(|_| IngestError::Shutdown)?;
        Ok(Cycle { answered, broken, samples: sent })
    }

    /// One read with the timeout.
    async fn read(&self, client: &mut Context, req: &ReadRequest) -> Outcome {
        client.set_slave(Slave(req.unit));
        let call = async {
            match req.table {
                ModbusTable::Holding => {
                    client.read_holding_registers(req.start, req.count).await.map(|r| r.map(Outcome::Words))
                }
                ModbusTable::Input => {
                    client.read_input_registers(req.start, req.count).await.map(|r| r.map(Outcome::Words))
                }
                ModbusTable::Coil => client.read_coils(req.start, req.count).await.map(|r| r.map(Outcome::Bits)),
                ModbusTable::Discrete => {
                    client.read_discrete_inputs(req.start, req.count).await.map(|r| r.map(Outcome::Bits))
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Outcome::Timeout,
            Ok(Ok(Ok(o))) => o,
            Ok(Ok(Err(code))) => Outcome::Exception(exception_code(code)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Outcome::Broken(format!("connection closed or failed: {e}")),
            // A stale answer (e.g. a late reply to a timed-out read): the stream is out of step.
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Outcome::Broken(format!("protocol: {e}")),
        }
    }

    /// Marks every tag of `req` with a bad quality.
    fn mark(&self, ctx: &SourceCtx, req: &ReadRequest, ts: Timestamp, q: Quality, out: &mut Vec<Sample>) {
        out.extend(req.tags.iter().filter_map(|&i| ctx.tags.get(i)).map(|t| t.bad(ts, q)));
    }

    fn decode_words(&self, ctx: &SourceCtx, req: &ReadRequest, words: &[u16], ts: Timestamp, out: &mut Vec<Sample>) {
        for &i in &req.tags {
            let (Some(tag), Some(Some(addr))) = (ctx.tags.get(i), self.addrs.get(i)) else { continue };
            let off = usize::from(addr.register.saturating_sub(req.start));
            let result = words.get(off..).ok_or(decode::DecodeError::Short { want: 1, got: 0 });
            match result.and_then(|w| decode::decode_registers(addr, w)) {
                Ok(v) => out.push(tag.sample(ts, v, Quality::GOOD)),
                Err(e) => {
                    debug!(source = ctx.id(), tag = %tag.tag.name, error = %e, "modbus value not decodable");
                    ctx.health.count_malformed();
                    out.push(tag.bad(ts, Quality::BAD_DECODING));
                }
            }
        }
    }

    fn decode_bits(&self, ctx: &SourceCtx, req: &ReadRequest, bits: &[bool], ts: Timestamp, out: &mut Vec<Sample>) {
        for &i in &req.tags {
            let (Some(tag), Some(Some(addr))) = (ctx.tags.get(i), self.addrs.get(i)) else { continue };
            match bits.get(usize::from(addr.register.saturating_sub(req.start))) {
                Some(b) => out.push(tag.sample(ts, decode::decode_bit(*b), Quality::GOOD)),
                None => {
                    ctx.health.count_malformed();
                    out.push(tag.bad(ts, Quality::BAD_DECODING));
                }
            }
        }
    }
}

fn exception_code(code: ExceptionCode) -> u8 {
    code.into()
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SourceConfig};

    const BASE: &str = "[site]\nname = \"P\"\n[[area]]\nid = \"a\"\nname = \"A\"\n[[line]]\nid = \"l\"\nname = \"L\"\narea = \"a\"\n[[asset]]\nid = \"m\"\nname = \"M\"\nline = \"l\"\nkind = \"m\"\n[[source]]\nid = \"plc\"\nkind = \"modbus\"\nendpoint = \"tcp://127.0.0.1:5020\"\n";

    #[test]
    fn source_settings_have_defaults_and_poll_groups_load() {
        let c = Config::from_str_named(BASE, "t.toml").expect("loads");
        let SourceConfig::Modbus(m) = &c.sources[0] else { panic!("not modbus") };
        assert_eq!(m.timeout.0, std::time::Duration::from_secs(1));
        assert_eq!(m.max_gap, 16);
        assert!(m.poll_groups.is_empty());
        let text = format!(
            "{BASE}timeout = \"250ms\"\nmax_gap = 0\n[[source.poll_groups]]\ninterval = \"10s\"\ntags = [\"utilities.*\", \"washer.temp\"]\n"
        );
        let c = Config::from_str_named(&text, "t.toml").expect("loads");
        let SourceConfig::Modbus(m) = &c.sources[0] else { panic!("not modbus") };
        assert_eq!(m.max_gap, 0);
        assert_eq!(m.poll_groups[0].interval.0, std::time::Duration::from_secs(10));
        assert!(m.poll_groups[0].matches("utilities.air_pressure"));
        assert!(m.poll_groups[0].matches("washer.temp"));
        assert!(!m.poll_groups[0].matches("washer.temperature"));
    }

    #[test]
    fn rtu_over_tcp_endpoints_parse_and_print() {
        use crate::config::ModbusEndpoint;
        let e: ModbusEndpoint = "rtu+tcp://10.0.0.7:4001".parse().expect("parses");
        assert_eq!(e, ModbusEndpoint::RtuOverTcp { host: "10.0.0.7".into(), port: 4001 });
        assert_eq!(e.to_string(), "rtu+tcp://10.0.0.7:4001");
        assert_eq!("rtu+tcp://gw".parse::<ModbusEndpoint>().expect("parses").to_string(), "rtu+tcp://gw:502");
        for bad in ["rtu+tcp://", "rtu+tcp://h:0", "rtu+tcp://h:502/x"] {
            assert!(bad.parse::<ModbusEndpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_source_settings_are_reported_with_their_key() {
        for (extra, key) in [
            ("timeout = \"0s\"\n", "timeout"),
            ("max_gap = 200\n", "max_gap"),
            ("poll_interval = \"0s\"\n", "poll_interval"),
            ("poll_groups = [{ interval = \"1s\", tags = [] }]\n", "poll_groups"),
            ("poll_groups = [{ interval = \"1s\", tags = [\"a*b\"] }]\n", "poll_groups"),
            ("poll_groups = [{ interval = \"1s\", tags = [\"a\"], every = 2 }]\n", "every"),
        ] {
            let text = format!("{BASE}{extra}");
            let err = Config::from_str_named(&text, "t.toml").expect_err(extra).to_string();
            assert!(err.contains(key) && err.contains("t.toml:"), "{extra}: {err}");
        }
    }
}
