//! Request planning: which reads one poll cycle makes.
//!
//! Per unit id and table, the tags' address ranges are sorted and coalesced
//! into as few reads as possible (like Telegraf's request optimisation):
//! neighbouring ranges merge when the gap between them is at most `max_gap`
//! registers (`max_gap * 16` bits for coils and discrete inputs, where a gap
//! costs 16 times less) and the merged read stays within the protocol's limit
//! of 125 registers or 2000 bits.

use crate::config::{ModbusAddress, ModbusTable};

/// Most registers one read may ask for (function codes 3 and 4).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits one read may ask for (function codes 1 and 2).
pub const MAX_BITS: u16 = 2000;

/// One read request and the tags it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Unit (slave) id.
    pub unit: u8,
    /// Table (function code).
    pub table: ModbusTable,
    /// First register or bit.
    pub start: u16,
    /// Registers or bits to read.
    pub count: u16,
    /// The tags served, as indices into the caller's list.
    pub tags: Vec<usize>,
}

impl ReadRequest {
    /// One past the last register or bit read.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// The limit of one read of `table`.
pub fn limit(table: ModbusTable) -> u16 {
    if table.is_bits() {
        MAX_BITS
    } else {
        MAX_REGISTERS
    }
}

fn table_rank(t: ModbusTable) -> u8 {
    match t {
        ModbusTable::Coil => 0,
        ModbusTable::Discrete => 1,
        ModbusTable::Holding => 2,
        ModbusTable::Input => 3,
    }
}

/// Plans the reads for `tags` (index, address): sorted by unit, table and
/// start; every tag appears in exactly one request.
pub fn plan(tags: &[(usize, &ModbusAddress)], max_gap: u16) -> Vec<ReadRequest> {
    let mut items: Vec<(u8, ModbusTable, u32, u32, usize)> = tags
        .iter()
        .map(|(i, a)| {
            let len = if a.table.is_bits() { 1 } else { a.word_count().max(1) };
            (a.unit, a.table, u32::from(a.register), u32::from(a.register) + len, *i)
        })
        .collect();
    items.sort_by_key(|&(unit, table, start, end, i)| (unit, table_rank(table), start, end, i));

    let mut out: Vec<ReadRequest> = Vec::new();
    for (unit, table, start, end, i) in items {
        let gap = if table.is_bits() { u32::from(max_gap) * 16 } else { u32::from(max_gap) };
        if let Some(last) = out.last_mut() {
            let same_block = last.unit == unit && last.table == table;
            let close = start <= last.end() + gap;
            let new_end = end.max(last.end());
            if same_block && close && new_end - u32::from(last.start) <= u32::from(limit(table)) {
                last.count = (new_end - u32::from(last.start)) as u16;
                last.tags.push(i);
                continue;
            }
        }
        // A single value never exceeds the limit (the config loader checks string lengths).
        out.push(ReadRequest { unit, table, start: start as u16, count: (end - start) as u16, tags: vec![i] });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModbusDataType, WordOrder};

    fn a(unit: u8, table: ModbusTable, register: u16, t: ModbusDataType) -> ModbusAddress {
        ModbusAddress {
            unit,
            table,
            register,
            data_type: t,
            order: WordOrder::Abcd,
            bit: None,
            scale: None,
            offset: None,
            length: if t == ModbusDataType::String { Some(10) } else { None },
        }
    }

    fn run(addrs: &[ModbusAddress], gap: u16) -> Vec<(u8, ModbusTable, u16, u16, Vec<usize>)> {
        let tags: Vec<(usize, &ModbusAddress)> = addrs.iter().enumerate().collect();
        plan(&tags, gap).into_iter().map(|r| (r.unit, r.table, r.start, r.count, r.tags)).collect()
    }

    use ModbusDataType::*;
    use ModbusTable::*;

    #[test]
    fn neighbours_merge_and_gaps_split() {
        let addrs = [
            a(1, Holding, 10, F32), // 10..12
            a(1, Holding, 0, U16),  // 0..1
            a(1, Holding, 12, F64), // 12..16
            a(1, Holding, 40, U16), // gap 24 from 16
        ];
        assert_eq!(run(&addrs, 16), vec![(1, Holding, 0, 16, vec![1, 0, 2]), (1, Holding, 40, 1, vec![3])]);
        // With a gap of 24 allowed, one read.
        assert_eq!(run(&addrs, 24), vec![(1, Holding, 0, 41, vec![1, 0, 2, 3])]);
        // With no gap allowed, only touching ranges merge.
        assert_eq!(
            run(&addrs, 0),
            vec![(1, Holding, 0, 1, vec![1]), (1, Holding, 10, 6, vec![0, 2]), (1, Holding, 40, 1, vec![3])]
        );
    }

    #[test]
    fn units_and_tables_never_merge() {
        let addrs = [a(1, Holding, 0, U16), a(2, Holding, 1, U16), a(1, Input, 1, U16), a(1, Coil, 0, Bool)];
        assert_eq!(
            run(&addrs, 16),
            vec![
                (1, Coil, 0, 1, vec![3]),
                (1, Holding, 0, 1, vec![0]),
                (1, Input, 1, 1, vec![2]),
                (2, Holding, 1, 1, vec![1]),
            ]
        );
    }

    #[test]
    fn reads_stay_within_the_protocol_limits() {
        // 100 f64 values back to back: 400 registers, so 4 reads of at most 125.
        let addrs: Vec<ModbusAddress> = (0..100).map(|i| a(1, Input, i * 4, F64)).collect();
        let reqs = run(&addrs, 16);
        assert!(reqs.iter().all(|r| r.3 <= MAX_REGISTERS));
        assert_eq!(reqs.iter().map(|r| r.4.len()).sum::<usize>(), 100);
        assert_eq!(reqs.len(), 4); // 31 values (124 registers) per read
        assert_eq!(reqs[0].3, 124);
        // A value is never split across reads: each read holds whole values.
        for r in &reqs {
            assert_eq!(r.3 % 4, 0);
        }
        // Bits: 5000 coils in one run split at 2000.
        let addrs: Vec<ModbusAddress> = (0..5000).map(|i| a(1, Coil, i, Bool)).collect();
        let reqs = run(&addrs, 16);
        assert_eq!(reqs.iter().map(|r| r.3).collect::<Vec<_>>(), vec![2000, 2000, 1000]);
    }

    #[test]
    fn overlapping_and_duplicate_addresses_share_a_read() {
        let addrs = [a(1, Holding, 0, F64), a(1, Holding, 2, U16), a(1, Holding, 0, F64), a(1, Holding, 0, String)];
        assert_eq!(run(&addrs, 0), vec![(1, Holding, 0, 5, vec![0, 2, 3, 1])]);
    }

    #[test]
    fn bit_gaps_are_sixteen_times_wider() {
        // max_gap 16 registers = 256 bits.
        let addrs = [a(1, Discrete, 0, Bool), a(1, Discrete, 200, Bool), a(1, Discrete, 500, Bool)];
        assert_eq!(run(&addrs, 16), vec![(1, Discrete, 0, 201, vec![0, 1]), (1, Discrete, 500, 1, vec![2])]);
    }
}
