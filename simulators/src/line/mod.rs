//! The bottling line: its tags (`catalog`), the physics and fault model
//! (`model`), scenarios (`scenario`) and the ground truth (`truth`).

pub mod catalog;
pub mod history;
pub mod live;
pub mod model;
pub mod scenario;
pub mod truth;

use std::sync::Arc;

pub use catalog::{Binding, Catalog, Index, MachineState, ModbusReg, PlcType, Table, Tag, Val, WordOrder};

/// Which servers are in a comms-loss fault right now: they stop answering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Down {
    pub opcua: bool,
    pub modbus: bool,
    pub mqtt: bool,
}

/// The latest sample of every tag: what the servers serve. `values[i]` and
/// `stamps[i]` belong to `Catalog::tags[i]`; a tag's stamp moves when it is
/// sampled (every `period_ms` of simulated time), and only then may its value change.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Simulated time of this frame, ns since the Unix epoch.
    pub ts_ns: i64,
    pub values: Vec<Val>,
    /// Source timestamp (simulated, ns since the epoch) of each value.
    pub stamps: Vec<i64>,
    pub down: Down,
}

/// What a server needs: the catalog and a stream of frames. Frames arrive
/// every model step (100 ms of simulated time); a server that only wants
/// changes compares `stamps`.
#[derive(Clone)]
pub struct Feed {
    pub catalog: Arc<Catalog>,
    pub frames: tokio::sync::watch::Receiver<Arc<Frame>>,
}
